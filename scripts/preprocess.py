"""Snakemake adapter (rules/data.smk: preprocess): check and preprocess (or import) one dataset."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.data.preprocess:preprocess_dataset",
    snakemake.wildcards.dataset,
    snakemake.input.raw,
    snakemake.input.splits,
    snakemake.output[0],
    params=snakemake.params.preprocessing,
    source=snakemake.params.source,
)
