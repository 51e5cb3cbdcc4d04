"""Snakemake adapter (rules/report.smk: provenance): reproducibility CSV, resolved config, versions page."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.report.provenance:provenance",
    list(snakemake.input.info),
    dict(snakemake.params.config),
    dict(snakemake.output.items()),
)
