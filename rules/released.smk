# The authors' released SS-Net checkpoints (datasets.<D>.released_checkpoints: [{labelled, path}]):
# each is imported by the explicit reference-name mapping (instead of training) into
# results/runs/<D>/released/<labelled>/seed0/ and evaluated by the same evaluation script, giving a
# "released checkpoint" row in the tables. Import: ssnet/released.py; workflow helpers: ssnet/workflow.py.
from ssnet.workflow import (  # noqa: E402
    released_checkpoint_path,
    reserved_name_problem,
)

if reserved_name_problem(config):
    _stop(reserved_name_problem(config))

# ssnet.workflow.runs_of lists the released rows with the trained runs (tables and figures);
# the import writes header-only train/val logs, so a released run folder has every per-run file.


ruleorder: import_released > train
ruleorder: evaluate_released > evaluate


rule import_released:
    input:
        checkpoint=lambda w: released_checkpoint_path(config, w.dataset, w.labelled),
        data="results/preprocessed/{dataset}",
    output:
        model="results/runs/{dataset}/released/{labelled}/seed0/model.pt",
        info="results/runs/{dataset}/released/{labelled}/seed0/run_info.json",
        train_log="results/runs/{dataset}/released/{labelled}/seed0/train_log.csv",
        val_log="results/runs/{dataset}/released/{labelled}/seed0/val_log.csv",
    log:
        "logs/import_released/{dataset}/{labelled}.log",
    benchmark:
        "results/benchmarks/import_released/{dataset}/{labelled}.tsv"
    retries: 0
    conda:
        train_env()
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        inference=lambda w: config["datasets"][w.dataset]["inference"],
        device=config["device"],
    script:
        "../scripts/import_released.py"


rule evaluate_released:
    input:
        model="results/runs/{dataset}/released/{labelled}/seed0/model.pt",
        data="results/preprocessed/{dataset}",
    output:
        "results/runs/{dataset}/released/{labelled}/seed0/test_metrics.csv",
        predictions="results/runs/{dataset}/released/{labelled}/seed0/predictions.npz",
    log:
        "logs/evaluate/{dataset}/released/{labelled}/seed0.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/released/{labelled}/seed0.tsv"
    conda:
        train_env()
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=train_gpus(),
    params:
        inference=lambda w: config["datasets"][w.dataset]["inference"],
        qualitative_cases=config["report"]["qualitative_cases"],
        allocator=config["cpu_allocator"],
    script:
        "../scripts/evaluate.py"
