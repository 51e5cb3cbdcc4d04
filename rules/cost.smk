# Compute cost: per-rule and per-grid-cell summaries of the Snakemake benchmark files, and an estimate
# of the device-hours (GPU-hours with device: cuda) of the full paper grid in config.yaml (not the
# overlays) from the per-iteration times the training engine measured (ssnet/cost.py).
from ssnet.cost import protocol_grid  # noqa: E402


rule cost:
    input:
        info=[
            path
            for dataset in DATASETS
            for path in run_files(dataset, "run_info.json")
        ],
        # the aggregation tables: every training/evaluation job (and its benchmark file) is done
        after=expand("results/tables/{dataset}/main_table.csv", dataset=DATASETS),
    output:
        report="results/cost/cost.md",
        jobs="results/cost/jobs.csv",
        rules="results/cost/rules.csv",
        grid="results/cost/grid.csv",
        iterations="results/cost/iterations.csv",
        estimate="results/cost/estimate.csv",
    log:
        "logs/cost/cost.log",
    retries: 0
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        benchmarks="results/benchmarks",
        grid=protocol_grid(Path(workflow.basedir) / "config.yaml"),
        grid_name="config.yaml",
        logs="logs",
    script:
        "../scripts/cost.py"
