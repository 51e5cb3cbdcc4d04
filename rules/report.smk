# Stage 4: aggregation of all runs of a dataset into paper-style tables and figures.


rule aggregate:
    input:
        metrics=run_metric_files,
        info=run_info_files,
    output:
        table_csv="results/tables/{dataset}/main_table.csv",
        table_md="results/tables/{dataset}/main_table.md",
        table_tex="results/tables/{dataset}/main_table.tex",
        runs_csv="results/tables/{dataset}/runs.csv",
        figure_png="results/figures/{dataset}/dice_vs_labelled.png",
        figure_pdf="results/figures/{dataset}/dice_vs_labelled.pdf",
    log:
        "logs/aggregate/{dataset}.log",
    benchmark:
        "results/benchmarks/aggregate/{dataset}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        method_order=method_order,
        schedule_profile=config.get("schedule_profile", "reference"),
    script:
        "../scripts/aggregate.py"
