"""Snakemake adapter (rules/evaluate.smk: evaluate): per-case test metrics of one run."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.evaluation.evaluate:evaluate_run",
    snakemake.input.model,
    snakemake.input.data,
    snakemake.output[0],
    inference=snakemake.params.inference,
    threads=snakemake.threads,
    predictions_out=snakemake.output.predictions,
    qualitative_cases=snakemake.params.qualitative_cases,
    allocator=snakemake.params.allocator,
)
