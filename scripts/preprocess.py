"""Snakemake adapter (rules/data.smk: preprocess): check and preprocess (or import) one dataset."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.data.preprocess import preprocess_dataset
from ssnet.jobs import run_job

run_job(
    snakemake,
    preprocess_dataset,
    snakemake.wildcards.dataset,
    snakemake.input.raw,
    snakemake.input.splits,
    snakemake.output[0],
    params=snakemake.params.preprocessing,
    source=snakemake.params.source,
)
