# Stage 4: aggregation of all runs of a dataset into paper-style tables, figures and the HTML report
# (snakemake ... --report results/report.html). Every table and figure is registered with report(),
# category = dataset, subcategory = labelled count; captions live in report/*.rst.


report: "../report/workflow.rst"


# Input lists and report subcategories come from ssnet.report.targets (rules/common.smk's run layout).
from ssnet.report.targets import (  # noqa: E402
    TABLES_SUBCATEGORY,
    all_run_info_files,
    labelled_figure_inputs,
    labelled_subcategory,
    per_class_constraint,
    report_targets,
)

PAPER_RESULTS = config["report"]["paper_results"]


# ---- rules ---------------------------------------------------------------------------------------
rule aggregate:
    input:
        metrics=run_metric_files,
        info=run_info_files,
        paper=PAPER_RESULTS,
    output:
        table_csv=report(
            "results/tables/{dataset}/main_table.csv",
            caption="../report/main_table.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "main table", "format": "CSV"},
        ),
        table_md="results/tables/{dataset}/main_table.md",
        table_tex=report(
            "results/tables/{dataset}/main_table.tex",
            caption="../report/main_table.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "main table", "format": "LaTeX"},
        ),
        table_html=report(
            "results/tables/{dataset}/main_table.html",
            caption="../report/main_table.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "main table", "format": "HTML"},
        ),
        runs_csv="results/tables/{dataset}/runs.csv",
        figure_png=report(
            "results/figures/{dataset}/dice_vs_labelled.png",
            caption="../report/dice_vs_labelled.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "Dice vs labelled scans", "format": "PNG"},
        ),
        figure_pdf="results/figures/{dataset}/dice_vs_labelled.pdf",
    log:
        "logs/aggregate/{dataset}.log",
    benchmark:
        "results/benchmarks/aggregate/{dataset}.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        method_order=method_order,
        schedule_profile=config["schedule_profile"],
        data_source=lambda wc: config["datasets"][wc.dataset]["source"],
    script:
        "../scripts/aggregate.py"


rule per_class_table:
    input:
        metrics=run_metric_files,
        info=run_info_files,
    output:
        per_class_csv=report(
            "results/tables/{dataset}/per_class.csv",
            caption="../report/per_class.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "per class", "format": "CSV"},
        ),
        per_class_md="results/tables/{dataset}/per_class.md",
        per_class_tex="results/tables/{dataset}/per_class.tex",
        per_class_html=report(
            "results/tables/{dataset}/per_class.html",
            caption="../report/per_class.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "per class", "format": "HTML"},
        ),
    log:
        "logs/per_class_table/{dataset}.log",
    benchmark:
        "results/benchmarks/per_class_table/{dataset}.tsv"
    wildcard_constraints:
        dataset=per_class_constraint(DATASETS),  # datasets with several foreground classes
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        method_order=method_order,
        schedule_profile=config["schedule_profile"],
        data_source=lambda wc: config["datasets"][wc.dataset]["source"],
    script:
        "../scripts/result_tables.py"


rule ablation_table:
    input:
        metrics=run_metric_files,
        info=run_info_files,
    output:
        ablation_csv=report(
            "results/tables/{dataset}/ablation.csv",
            caption="../report/ablation.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "SS-Net ablation", "format": "CSV"},
        ),
        ablation_md="results/tables/{dataset}/ablation.md",
        ablation_tex="results/tables/{dataset}/ablation.tex",
        ablation_html=report(
            "results/tables/{dataset}/ablation.html",
            caption="../report/ablation.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "SS-Net ablation", "format": "HTML"},
        ),
    log:
        "logs/ablation_table/{dataset}.log",
    benchmark:
        "results/benchmarks/ablation_table/{dataset}.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        method_order=method_order,
        schedule_profile=config["schedule_profile"],
        data_source=lambda wc: config["datasets"][wc.dataset]["source"],
    script:
        "../scripts/result_tables.py"


rule significance_table:
    input:
        metrics=run_metric_files,
        info=run_info_files,
    output:
        significance_csv=report(
            "results/tables/{dataset}/significance.csv",
            caption="../report/significance.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "significance vs SS-Net", "format": "CSV"},
        ),
        significance_md="results/tables/{dataset}/significance.md",
        significance_tex="results/tables/{dataset}/significance.tex",
        significance_html=report(
            "results/tables/{dataset}/significance.html",
            caption="../report/significance.rst",
            category="{dataset}",
            subcategory=TABLES_SUBCATEGORY,
            labels={"result": "significance vs SS-Net", "format": "HTML"},
        ),
    log:
        "logs/significance_table/{dataset}.log",
    benchmark:
        "results/benchmarks/significance_table/{dataset}.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        method_order=method_order,
        schedule_profile=config["schedule_profile"],
        data_source=lambda wc: config["datasets"][wc.dataset]["source"],
    script:
        "../scripts/result_tables.py"


rule labelled_figures:
    input:
        unpack(lambda wc: labelled_figure_inputs(config, wc.dataset, wc.labelled)),
    output:
        curves_png=report(
            "results/figures/{dataset}/{labelled}/training_curves.png",
            caption="../report/training_curves.rst",
            category="{dataset}",
            subcategory=lambda wc: labelled_subcategory(wc.labelled),
            labels={"result": "training curves", "format": "PNG"},
        ),
        curves_pdf="results/figures/{dataset}/{labelled}/training_curves.pdf",
        distribution_png=report(
            "results/figures/{dataset}/{labelled}/dice_distribution.png",
            caption="../report/dice_distribution.rst",
            category="{dataset}",
            subcategory=lambda wc: labelled_subcategory(wc.labelled),
            labels={"result": "per-case Dice distribution", "format": "PNG"},
        ),
        distribution_pdf="results/figures/{dataset}/{labelled}/dice_distribution.pdf",
        qualitative_png=report(
            "results/figures/{dataset}/{labelled}/qualitative.png",
            caption="../report/qualitative.rst",
            category="{dataset}",
            subcategory=lambda wc: labelled_subcategory(wc.labelled),
            labels={"result": "qualitative comparison", "format": "PNG"},
        ),
        qualitative_pdf="results/figures/{dataset}/{labelled}/qualitative.pdf",
    log:
        "logs/labelled_figures/{dataset}/{labelled}.log",
    benchmark:
        "results/benchmarks/labelled_figures/{dataset}/{labelled}.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        method_order=method_order,
    script:
        "../scripts/labelled_figures.py"


rule provenance:
    input:
        info=all_run_info_files(config, DATASETS),
    output:
        csv=report(
            "results/tables/reproducibility.csv",
            caption="../report/reproducibility.rst",
            category="Reproducibility",
            labels={"result": "per-run provenance", "format": "CSV"},
        ),
        config_yaml=report(
            "results/report/config_resolved.yaml",
            caption="../report/reproducibility.rst",
            category="Reproducibility",
            labels={"result": "resolved configuration", "format": "YAML"},
        ),
        html=report(
            "results/report/reproducibility.html",
            caption="../report/reproducibility.rst",
            category="Reproducibility",
            labels={
                "result": "config, versions, per-run provenance",
                "format": "HTML",
            },
        ),
    log:
        "logs/provenance/provenance.log",
    benchmark:
        "results/benchmarks/provenance/provenance.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=config,
    script:
        "../scripts/provenance.py"


rule results_summary:
    input:
        tables=expand("results/tables/{dataset}/main_table.csv", dataset=DATASETS),
    output:
        report(
            "results/summary.md",
            caption="../report/summary.rst",
            category="Reproducibility",
            labels={"result": "paper vs ours summary", "format": "Markdown"},
        ),
    log:
        "logs/results_summary/results_summary.log",
    benchmark:
        "results/benchmarks/results_summary/results_summary.tsv"
    retries: 0
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        data_sources={d: config["datasets"][d]["source"] for d in DATASETS},
    script:
        "../scripts/results_summary.py"
