"""Input/output file lists of the report rules (rules/report.smk), computed from the config.

Kept in the package (not in the Snakefile) so that the rules file holds rules only; the run layout
is the one of rules/common.smk: ``results/runs/<D>/<method>/<labelled>/seed<S>/``.
"""

from __future__ import annotations

from ssnet.config import FULL
from ssnet.datasets import get_dataset
from ssnet.workflow import run_path, runs_of

RUN_FILES = {"metrics": "test_metrics.csv", "info": "run_info.json", "train_log": "train_log.csv",
             "val_log": "val_log.csv", "predictions": "predictions.npz"}
TABLES_SUBCATEGORY = "All labelled counts"


def figure_labelled_values(config: dict, dataset: str) -> list[str]:
    """Labelled wildcard values of a dataset's runs: the labelled counts, then 'all' when trained."""
    return list(dict.fromkeys(labelled for _, labelled, _ in runs_of(config, dataset)))


def labelled_figure_inputs(config: dict, dataset: str, labelled: str) -> dict[str, list[str]]:
    """Run files of one labelled count plus the full-supervision runs (the reference)."""
    runs = [run for run in runs_of(config, dataset) if run[1] in (labelled, FULL)]
    return {key: [run_path(dataset, *run, name) for run in runs] for key, name in RUN_FILES.items()}


def all_run_info_files(config: dict, datasets: list[str]) -> list[str]:
    return [run_path(d, *run, "run_info.json") for d in datasets for run in runs_of(config, d)]


def labelled_subcategory(labelled: str) -> str:
    return "Full supervision" if labelled == FULL else f"{labelled} labelled"


def per_class_datasets(datasets: list[str]) -> list[str]:
    """The datasets with more than one foreground class: they get a per-class table."""
    return [d for d in datasets if len(get_dataset(d).class_names) > 1]


def per_class_constraint(datasets: list[str]) -> str:
    """The ``{dataset}`` wildcard constraint of the per-class table rule (a regex matching nothing when
    no dataset has several foreground classes)."""
    return "|".join(per_class_datasets(datasets)) or "(?!)"


def report_targets(config: dict, datasets: list[str]) -> list[str]:
    """Every table, figure and summary of the report stage (for rule all)."""
    outputs = ["results/tables/reproducibility.csv", "results/summary.md"]
    for dataset in datasets:
        tables = ["main_table.html", "ablation.html", "significance.html"]
        tables += ["per_class.html"] if dataset in per_class_datasets([dataset]) else []
        outputs += [f"results/tables/{dataset}/{name}" for name in tables]
        outputs.append(f"results/figures/{dataset}/dice_vs_labelled.png")
        outputs += [f"results/figures/{dataset}/{labelled}/{name}.png" for labelled in figure_labelled_values(config, dataset)
                    for name in ("training_curves", "dice_distribution", "qualitative")]
    return outputs
