"""Snakemake adapter (rules/released.smk: import_released): a released checkpoint as a run."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.jobs import run_job

run_job(
    snakemake,
    "ssnet.released:import_released",
    snakemake.input.checkpoint,
    snakemake.wildcards.dataset,
    snakemake.wildcards.labelled,
    snakemake.input.data,
    snakemake.output.model,
    snakemake.output.info,
    inference=snakemake.params.inference,
    device=snakemake.params.device,
    train_log_out=snakemake.output.train_log,
    val_log_out=snakemake.output.val_log,
)
