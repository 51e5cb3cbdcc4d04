"""Snakemake adapter (rules/data.smk: make_synthetic): write a synthetic raw archive and its splits."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.data.synthetic import make_synthetic
from ssnet.jobs import run_job

run_job(
    snakemake,
    make_synthetic,
    snakemake.wildcards.dataset,
    snakemake.output.raw,
    snakemake.output.splits,
    params=snakemake.params.synthetic,
    seed=snakemake.params.seed,
)
