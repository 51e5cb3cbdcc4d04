"""Snakemake adapter (rules/report.smk: per_class_table, ablation_table, significance_table)."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.report.aggregate:result_tables",
    snakemake.wildcards.dataset,
    list(snakemake.input.metrics),
    list(snakemake.input.info),
    snakemake.params.method_order,
    snakemake.params.schedule_profile,
    dict(snakemake.output.items()),
    data_source=snakemake.params.data_source,
)
