"""Snakemake adapter (rules/report.smk: results_summary): paper-vs-ours summary (results/summary.md)."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.report.provenance:summary",
    list(snakemake.input.tables),
    dict(snakemake.params.data_sources),
    snakemake.output[0],
)
