"""Aggregation stage entry points (one per rule of rules/report.smk).

- :func:`aggregate`: main table (CSV, Markdown, LaTeX, HTML), one row per run, Dice vs labelled figure.
- :func:`result_tables`: per-class (datasets with several foreground classes), SS-Net ablation and
  significance tables.
- :func:`labelled_figures`: training curves, per-case Dice distribution, qualitative comparison of
  one labelled count.
- :func:`provenance` and :func:`summary` (in :mod:`ssnet.report.provenance`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ssnet.config import FULL
from ssnet.datasets import get_dataset
from ssnet.engine import run_info
from ssnet.io import write_csv
from ssnet.report import figures
from ssnet.report.predictions import read_qualitative
from ssnet.report.render import Table, write_rendered
from ssnet.report.significance import per_case_dice, significance_table
from ssnet.report.tables import (ablation_table, is_ablation, load_cases, load_paper, load_runs, main_table,
                                 per_class_table)


def _write_table(frame: pd.DataFrame, table: Table, outputs: dict[str, str], prefix: str = "") -> None:
    """``<prefix>csv``, ``<prefix>md``, ``<prefix>tex``, ``<prefix>html`` keys of ``outputs``, when present."""
    if outputs.get(f"{prefix}csv"):
        write_csv(outputs[f"{prefix}csv"], frame)
    write_rendered(table, outputs.get(f"{prefix}md"), outputs.get(f"{prefix}tex"), outputs.get(f"{prefix}html"))


def aggregate(dataset: str, metric_files: Sequence[str], info_files: Sequence[str], method_order: Sequence[str],
              schedule_profile: str, outputs: dict[str, str], paper_results: str | None = None,
              data_source: str | None = None) -> None:
    """Write ``outputs`` = {table_csv, table_md, table_tex, [table_html], runs_csv, figure_png, figure_pdf}."""
    runs = load_runs(metric_files, info_files)
    frame, table = main_table(runs, method_order, dataset, load_paper(paper_results), schedule_profile, data_source)
    _write_table(frame, table, outputs, prefix="table_")
    write_csv(outputs["runs_csv"], runs.sort_values(["method", "labelled", "seed"]))
    figures.dice_vs_labelled(runs, method_order, dataset, Path(outputs["figure_png"]), Path(outputs["figure_pdf"]))


def result_tables(dataset: str, metric_files: Sequence[str], info_files: Sequence[str], method_order: Sequence[str],
                  schedule_profile: str, outputs: dict[str, str], data_source: str | None = None) -> None:
    """Whichever of ``per_class_*``, ``ablation_*``, ``significance_*`` (csv, md, tex, html) are asked for."""
    cases = load_cases(metric_files, info_files)
    if any(k.startswith("per_class_") for k in outputs):
        _write_table(*per_class_table(cases, method_order, dataset, schedule_profile, data_source), outputs, "per_class_")
    if any(k.startswith("ablation_") for k in outputs):
        runs = load_runs(metric_files, info_files)
        _write_table(*ablation_table(runs, method_order, dataset, schedule_profile, data_source), outputs, "ablation_")
    if any(k.startswith("significance_") for k in outputs):
        _write_table(*significance_table(cases, method_order, dataset, schedule_profile, data_source), outputs,
                     "significance_")


def _read_log(path: str | Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["iteration"])


def labelled_figures(dataset: str, labelled: str, runs: dict[str, Sequence[str]], method_order: Sequence[str],
                     outputs: dict[str, str]) -> None:
    """Figures of one labelled count; ``runs`` = {metrics, info, train_log, val_log, predictions} file lists.

    The lists hold the runs at ``labelled`` and, for a labelled count, the full-supervision runs too
    (drawn as the reference in the distribution and qualitative figures, not in the training curves).
    SS-Net ablation variants appear in the training curves and distributions, not in the qualitative figure.
    """
    infos = [run_info.read(p) for p in runs["info"]]
    cases = load_cases(runs["metrics"], runs["info"])
    here = cases[cases["labelled"] == labelled]
    scans = int(here["labelled_scans"].iloc[0]) if len(here) else None
    where = f"{dataset}, {figures.labelled_title(labelled, scans, get_dataset(dataset).scan_unit)}"

    logs = [{"method": info.method, "label": info.method_label, "seed": info.seed, "train": _read_log(train),
             "val": _read_log(val)}
            for info, train, val in zip(infos, runs["train_log"], runs["val_log"]) if info.labelled == labelled]
    figures.training_curves(logs, method_order, f"{where}: training curves (mean over seeds, shaded = seed range)",
                            Path(outputs["curves_png"]), Path(outputs["curves_pdf"]))

    per_case = per_case_dice(cases)
    labels = cases.drop_duplicates(["method", "labelled"]).set_index(["method", "labelled"])["label"]
    per_case["label"] = [labels[(m, lab)] for m, lab in zip(per_case["method"], per_case["labelled"])]
    rank = {m: i for i, m in enumerate(method_order)}
    per_case["order"] = [(lab == FULL and labelled != FULL, rank.get(m, len(rank))) for m, lab in
                         zip(per_case["method"], per_case["labelled"])]
    full = (per_case["labelled"] == FULL) & (labelled != FULL)
    per_case.loc[full, "label"] = per_case.loc[full, "label"] + " (full)"
    per_case.loc[full, "method"] = per_case.loc[full, "method"] + " (all)"
    per_case = per_case.sort_values("order", kind="stable")
    figures.dice_distribution(per_case, method_order, f"{where}: per-case Dice (seeds averaged)",
                              Path(outputs["distribution_png"]), Path(outputs["distribution_pdf"]))

    ablation = set(cases.loc[is_ablation(cases), "method"])
    first_seed = min(info.seed for info in infos)
    columns = []
    for info, path in sorted(zip(infos, runs["predictions"]),
                             key=lambda item: (item[0].labelled == FULL and labelled != FULL,
                                               rank.get(item[0].method, len(rank)))):
        if info.seed != first_seed or info.method in ablation:
            continue
        label = info.method_label
        if info.labelled == FULL and labelled != FULL:
            label += " (full)"
        columns.append({"label": label, "slices": read_qualitative(path)})
    figures.qualitative(columns, f"{where}: qualitative comparison (seed {first_seed}; contours of each class)",
                        Path(outputs["qualitative_png"]), Path(outputs["qualitative_pdf"]))
