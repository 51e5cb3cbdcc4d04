"""Snakemake adapter (rules/train.smk: train): train one run, resuming from its checkpoint if any."""

import _project  # noqa: F401  (puts the project package on sys.path)

from ssnet.engine.run_info import RunOutputs
from ssnet.jobs import run_job

out = snakemake.output
run_job(
    snakemake,
    "ssnet.engine.trainer:train",
    snakemake.params.run,
    int(snakemake.wildcards.seed),
    snakemake.input.data,
    RunOutputs(*(str(path) for path in (out.model, out.train_log, out.val_log, out.info))),
    snakemake.params.checkpoint_dir,
    threads=snakemake.threads,
    allocator=snakemake.params.run["cpu_allocator"],
)
