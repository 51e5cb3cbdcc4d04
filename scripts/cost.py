"""Snakemake adapter (rules/cost.smk: cost): compute cost summaries and the paper-grid estimate."""

import _project  # noqa: F401  (puts the project package on sys.path)

from pathlib import Path

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.cost:write_cost_report",
    snakemake.params.benchmarks,
    snakemake.input.info,
    snakemake.params.grid,
    Path(snakemake.output.report).parent,
    grid_name=snakemake.params.grid_name,
    logs_dir=snakemake.params.logs,
)
