"""Snakemake adapter (rules/report.smk: aggregate): main table, runs and Dice-vs-labelled figure of one dataset."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.report.aggregate:aggregate",
    snakemake.wildcards.dataset,
    list(snakemake.input.metrics),
    list(snakemake.input.info),
    snakemake.params.method_order,
    snakemake.params.schedule_profile,
    dict(snakemake.output.items()),
    paper_results=snakemake.input.paper,
    data_source=snakemake.params.data_source,
)
