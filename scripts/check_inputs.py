"""Snakemake adapter (rules/data.smk: check_inputs): check one dataset's inputs, record their fingerprint."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.data.fingerprint:check_and_fingerprint",
    snakemake.wildcards.dataset,
    snakemake.input.raw,
    snakemake.input.splits,
    snakemake.output[0],
    params=snakemake.params.preprocessing,
    source=snakemake.params.source,
    mode=snakemake.params.mode,
)
