"""Snakemake adapter (rules/data.smk: make_synthetic): write a synthetic raw archive and its splits."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.data.synthetic:make_synthetic",
    snakemake.wildcards.dataset,
    snakemake.output.raw,
    snakemake.output.splits,
    params=snakemake.params.synthetic,
    seed=snakemake.params.seed,
)
