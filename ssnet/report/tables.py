"""Paper-style results tables: metrics per (method, labelled count) as mean +- std over seeds.

Input: the per-case CSVs of :mod:`ssnet.evaluation.evaluate` and the runs' ``run_info.json``.
A run's score is the mean over its test cases (ACDC: over cases and the three classes); the table
reports mean +- sample std of the run scores across seeds, with the number of seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ssnet.io import atomic_path, write_csv

METRICS = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD (voxel)", "asd": "ASD (voxel)"}
PERCENT = {"dice", "jaccard"}


def load_runs(metric_files: Iterable[str | Path], info_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: identity, scans used, selection and the mean of each metric over test cases."""
    rows = []
    for metric_file, info_file in zip(metric_files, info_files):
        per_case = pd.read_csv(metric_file)
        info = json.loads(Path(info_file).read_text())
        row = {
            "dataset": info["dataset"], "method": info["method"], "label": info["run_config"]["method_label"],
            "labelled": str(info["labelled"]), "seed": info["seed"],
            "labelled_scans": info["n_labelled_scans"], "unlabelled_scans": info["n_unlabelled_scans"],
            "selection": info["selection"], "test_set_selection": info["test_set_selection"],
            "empty_predictions": int(per_case["empty_prediction"].sum()),
        }
        row.update({m: float(per_case[m].mean()) * (100.0 if m in PERCENT else 1.0) for m in METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame, method_order: Sequence[str]) -> pd.DataFrame:
    """Mean, std and seed count per (method, labelled), ordered by labelled block then method."""
    grouped = runs.groupby(["method", "labelled"], sort=False)
    table = grouped.agg(
        label=("label", "first"), labelled_scans=("labelled_scans", "first"),
        unlabelled_scans=("unlabelled_scans", "first"), n_seeds=("seed", "nunique"),
        empty_predictions=("empty_predictions", "sum"), selection=("selection", "first"),
        test_set_selection=("test_set_selection", "any"),
        **{f"{m}_mean": (m, "mean") for m in METRICS}, **{f"{m}_std": (m, "std") for m in METRICS},
    ).reset_index()
    table["method_rank"] = table["method"].map({m: i for i, m in enumerate(method_order)})
    table["full"] = table["labelled"] == "all"
    table = table.sort_values(["full", "labelled_scans", "method_rank"]).drop(columns=["method_rank"])
    return table.reset_index(drop=True)


def _cell(mean: float, std: float, latex: bool = False) -> str:
    pm = r"$\pm$" if latex else "±"
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} {pm} {std:.2f}"


def display_rows(table: pd.DataFrame, latex: bool = False) -> list[dict]:
    """Rows with formatted cells: method, scans used (labelled / unlabelled), metrics, seeds."""
    rows = []
    for _, r in table.iterrows():
        name = f"{r['label']} (full supervision)" if r["full"] else r["label"]
        row = {"Method": name, "Scans used (L/U)": f"{r['labelled_scans']} / {r['unlabelled_scans']}"}
        row.update({title: _cell(r[f"{m}_mean"], r[f"{m}_std"], latex) for m, title in METRICS.items()})
        row["Seeds"] = int(r["n_seeds"])
        row["Empty pred."] = int(r["empty_predictions"])
        rows.append(row)
    return rows


def footnote(table: pd.DataFrame, schedule_profile: str) -> str:
    """What the reader must know to interpret the numbers."""
    selections = ", ".join(sorted(set(table["selection"])))
    note = (f"Mean ± std over seeds (sample std; n = Seeds). Model selection: {selections}. "
            f"Schedule profile: {schedule_profile}. Distances in voxels; empty predictions score 0 (reference policy).")
    if table["test_set_selection"].any():
        note += " WARNING: test-set selection (best_test) was used - these numbers leak the test set."
    return note


def to_markdown(rows: list[dict], title: str, note: str) -> str:
    header = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines + ["", note, ""])


def to_latex(rows: list[dict], title: str, note: str) -> str:
    header = list(rows[0])
    escape = lambda s: str(s).replace("%", r"\%").replace("_", r"\_")  # noqa: E731
    lines = [r"\begin{table}", r"\centering", f"\\caption{{{escape(title)}}}",
             r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(row[h]) for h in header) + r" \\" for row in rows]
    latex_note = escape(note).replace("±", r"$\pm$")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\footnotesize " + latex_note, r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(table: pd.DataFrame, dataset: str, schedule_profile: str, csv: Path, markdown: Path, latex: Path) -> None:
    """The summary table as CSV (numbers), Markdown and LaTeX (booktabs), atomically."""
    title = f"{dataset}: test-set results"
    note = footnote(table, schedule_profile)
    write_csv(csv, table)
    with atomic_path(markdown) as tmp:
        tmp.write_text(to_markdown(display_rows(table), title, note))
    with atomic_path(latex) as tmp:
        tmp.write_text(to_latex(display_rows(table, latex=True), title, note))
