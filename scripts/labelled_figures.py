"""Snakemake adapter (rules/report.smk: labelled_figures): figures of one dataset and labelled count."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.report.aggregate:labelled_figures",
    snakemake.wildcards.dataset,
    snakemake.wildcards.labelled,
    {key: list(snakemake.input[key]) for key in ("metrics", "info", "train_log", "val_log", "predictions")},
    snakemake.params.method_order,
    dict(snakemake.output.items()),
)
