"""Paper-style results tables from the per-run outputs of one dataset.

Input: the per-case CSVs of :mod:`ssnet.evaluation.evaluate` (``test_metrics.csv``) and the runs'
``run_info.json``. A run's score is the mean over its test cases (and over the foreground classes of
a multi-class dataset); the tables report mean +- sample std of the run scores across seeds, with the
number of seeds, beside the published value and the difference. Labelled counts are in the dataset's
``scan_unit`` (LA scans, ACDC patients).

Tables (each a numeric CSV frame plus a :class:`ssnet.report.render.Table`):

- :func:`main_table`: Table 1 (LA) / Table 2 (ACDC) layout, one block per labelled count, then the
  full-supervision block; SS-Net ablation variants are left to :func:`ablation_table`.
- :func:`per_class_table`: per foreground class, for datasets with more than one (ACDC: RV, Myo, LV).
- :func:`ablation_table`: SS-Net with smoothness on/off x separation on/off.
- significance: :mod:`ssnet.report.significance`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ssnet.config import FULL
from ssnet.datasets import get_dataset
from ssnet.engine import run_info
from ssnet.report.render import Block, Cell, Table

METRICS = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD (voxel)", "asd": "ASD (voxel)"}
PERCENT = {"dice", "jaccard"}
HIGHER_IS_BETTER = {"dice": True, "jaccard": True, "hd95": False, "asd": False}
SELECTION_TEXT = {
    "last": "last iteration (no model selection)",
    "best_val": "best validation Dice (validation set; the test set is only read by evaluation)",
    "best_test": "best test Dice (TEST-SET SELECTION, as the reference LA code)",
}
SCHEDULE_TEXT = {
    "reference": "reference (each method on its own published training schedule)",
    "uniform": "uniform (every method on the dataset's SS-Net schedule)",
}
DAGGER = "†"


# ---- loading -------------------------------------------------------------------------------------
def _identity(info: run_info.RunInfo) -> dict:
    params = info.run_config["params"]
    return {
        "dataset": info.dataset, "method": info.method, "label": info.method_label,
        "method_type": info.method_type,
        # the ablation switches exist in SS-Net's params only
        "smoothness": bool(params.get("smoothness", False)), "separation": bool(params.get("separation", False)),
        "labelled": info.labelled, "seed": int(info.seed),
        "labelled_scans": int(info.n_labelled_scans), "unlabelled_scans": int(info.n_unlabelled_scans),
        "selection": info.selection, "test_set_selection": bool(info.test_set_selection),
        "schedule_profile": info.schedule_profile,
    }


def load_runs(metric_files: Iterable[str | Path], info_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: identity, scans used, selection and the mean of each metric over test cases."""
    rows = []
    for metric_file, info_file in zip(metric_files, info_files):
        per_case = pd.read_csv(metric_file)
        row = _identity(run_info.read(info_file))
        row["empty_predictions"] = int(per_case["empty_prediction"].sum())
        row.update({m: float(per_case[m].mean()) * (100.0 if m in PERCENT else 1.0) for m in METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def load_cases(metric_files: Iterable[str | Path], info_files: Iterable[str | Path]) -> pd.DataFrame:
    """Every per-case (and per-class) metric row, with the run's identity; Dice/Jaccard in %."""
    frames = []
    for metric_file, info_file in zip(metric_files, info_files):
        per_case = pd.read_csv(metric_file, dtype={"case": str})
        identity = _identity(run_info.read(info_file))
        per_case = per_case.drop(columns=[c for c in identity if c in per_case.columns])
        for key, value in identity.items():
            per_case[key] = value
        frames.append(per_case)
    cases = pd.concat(frames, ignore_index=True)
    for m in PERCENT:
        cases[m] = cases[m] * 100.0
    return cases


def is_ablation(runs: pd.DataFrame) -> pd.Series:
    """SS-Net variants with a loss term switched off (they belong in the ablation table)."""
    return (runs["method_type"] == "ssnet") & ~(runs["smoothness"] & runs["separation"])


def reference_method(runs: pd.DataFrame, method_order: Sequence[str]) -> str | None:
    """The full SS-Net (type ssnet, both terms on), first in method order; None when not run."""
    full = runs[(runs["method_type"] == "ssnet") & runs["smoothness"] & runs["separation"]]
    names = [m for m in method_order if m in set(full["method"])] or sorted(set(full["method"]))
    return names[0] if names else None


def load_paper(path: str | Path | None) -> pd.DataFrame:
    columns = ["dataset", "method", "labeled", "ratio", "dice", "jaccard", "hd95", "asd", "source"]
    if not path or not Path(path).is_file():
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path)


def paper_row(paper: pd.DataFrame, dataset: str, label: str, labelled: str, labelled_scans: int) -> dict | None:
    """The published numbers of (dataset, method label, labelled scans); full supervision is the paper's
    full-supervision row (the dataset's ``paper_full_labelled``, when known)."""
    full = get_dataset(dataset).paper_full_labelled
    scans = full if labelled == FULL and full is not None else labelled_scans
    hit = paper[(paper["dataset"] == dataset) & (paper["method"] == label) & (paper["labeled"] == scans)]
    return None if hit.empty else hit.iloc[0].to_dict()


# ---- summarising ---------------------------------------------------------------------------------
def _order(table: pd.DataFrame, method_order: Sequence[str]) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(method_order)}
    table["method_rank"] = table["method"].map(lambda m: rank.get(m, len(rank)))
    table["full"] = table["labelled"] == FULL
    table = table.sort_values(["full", "labelled_scans", "method_rank", "method"]).drop(columns=["method_rank"])
    return table.reset_index(drop=True)


def summarise(runs: pd.DataFrame, method_order: Sequence[str], keys: Sequence[str] = ("method", "labelled")) -> pd.DataFrame:
    """Mean, std and seed count per (method, labelled), ordered by labelled block then method."""
    grouped = runs.groupby(list(keys), sort=False)
    extra = {c: (c, "first") for c in ("label", "method_type", "smoothness", "separation", "labelled_scans",
                                        "unlabelled_scans", "selection", "schedule_profile") if c not in keys}
    table = grouped.agg(
        **extra, n_seeds=("seed", "nunique"), empty_predictions=("empty_predictions", "sum"),
        test_set_selection=("test_set_selection", "any"),
        **{f"{m}_mean": (m, "mean") for m in METRICS}, **{f"{m}_std": (m, "std") for m in METRICS},
    ).reset_index()
    return _order(table, method_order)


def best_flags(table: pd.DataFrame, columns: Iterable[str], block: str = "labelled") -> pd.DataFrame:
    """``<m>_best``: the best mean (at the shown 2 decimals) of each column within its block (2+ rows)."""
    out = table.copy()
    for column in columns:
        metric = column.removesuffix("_mean")
        values = out[column].round(2)
        best = values.groupby(out[block]).transform("max" if HIGHER_IS_BETTER[metric] else "min")
        size = out.groupby(block)[column].transform("size")
        out[f"{metric}_best"] = (values == best) & (size > 1) & values.notna()
    return out


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def mean_std(mean: float, std: float) -> str:
    return _fmt(mean) if std is None or np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def block_title(labelled: str, labelled_scans: int, total_scans: int | None, unit: str) -> str:
    """``4 labelled scans (5%)``, or ``Full supervision (80 labelled scans)``; ``unit``: the dataset's
    ``scan_unit``."""
    if labelled == FULL:
        return f"Full supervision ({labelled_scans} labelled {unit})"
    share = f" ({100.0 * labelled_scans / total_scans:.0f}%)" if total_scans else ""
    return f"{labelled_scans} labelled {unit}{share}"


def scans_used_columns(unit: str) -> list[tuple[str, str]]:
    """The labelled (L) and unlabelled (U) count columns, headed by the dataset's ``scan_unit``."""
    return [(f"{unit.capitalize()} used", "L"), (f"{unit.capitalize()} used", "U")]


def classes_text(dataset: str) -> str:
    """`` and the 3 classes (RV, Myo, LV)`` for a multi-class dataset, empty for one foreground class."""
    names = get_dataset(dataset).class_names
    return f" and the {len(names)} classes ({', '.join(names)})" if len(names) > 1 else ""


def _total_scans(table: pd.DataFrame) -> int | None:
    full = table[table["labelled"] == FULL]
    if not full.empty:
        return int(full["labelled_scans"].iloc[0])
    totals = table["labelled_scans"] + table["unlabelled_scans"]
    return int(totals.max()) if len(totals) else None


def _method_name(row: pd.Series) -> str:
    return f"{row['label']} {DAGGER}" if row["test_set_selection"] else str(row["label"])


def protocol_notes(runs: pd.DataFrame, schedule_profile: str | None, data_source: str | None) -> list[str]:
    """What a reader must know to interpret the numbers: selection, schedule, data, leakage."""
    selections = sorted(set(runs["selection"])) if len(runs) else []
    profiles = sorted(set(runs["schedule_profile"])) if len(runs) else [schedule_profile or "reference"]
    notes = [
        "Model selection: " + "; ".join(f"{s} = {SELECTION_TEXT.get(s, s)}" for s in selections) + ".",
        "Schedule profile: " + "; ".join(SCHEDULE_TEXT.get(p, p) for p in profiles) + ".",
    ]
    leaky = runs[runs["test_set_selection"]] if len(runs) else runs
    if len(leaky):
        names = ", ".join(dict.fromkeys(leaky["label"]))
        notes.append(f"WARNING: test-set selection (best_test) used for {names} (rows marked {DAGGER}): the model was "
                     "chosen by its test Dice, so these numbers leak the test set.")
    if data_source == "synthetic":
        notes.append("Data: synthetic demo volumes (configs/demo.yaml); published values are shown for the layout "
                     "only and are not comparable.")
    return notes


# ---- main table ----------------------------------------------------------------------------------
def main_table(runs: pd.DataFrame, method_order: Sequence[str], dataset: str, paper: pd.DataFrame,
               schedule_profile: str | None = None, data_source: str | None = None) -> tuple[pd.DataFrame, Table]:
    """Table 1/2 of the paper: ours (mean ± std, n), the published value and ours − published."""
    main_runs = runs[~is_ablation(runs)] if len(runs) else runs
    table = summarise(main_runs, method_order)
    for m in METRICS:
        table[f"{m}_paper"] = np.nan
    table["paper_source"] = ""
    for i, row in table.iterrows():
        published = paper_row(paper, dataset, row["label"], row["labelled"], int(row["labelled_scans"]))
        if published:
            for m in METRICS:
                table.loc[i, f"{m}_paper"] = float(published[m])
            table.loc[i, "paper_source"] = str(published.get("source", ""))
    for m in METRICS:
        table[f"{m}_delta"] = table[f"{m}_mean"] - table[f"{m}_paper"]
    table = best_flags(table, [f"{m}_mean" for m in METRICS])
    table.insert(0, "dataset", dataset)

    unit = get_dataset(dataset).scan_unit
    columns = [("", "Method"), *scans_used_columns(unit), ("", "n")]
    for title in METRICS.values():
        columns += [(title, "ours"), (title, "paper"), (title, "Δ")]
    columns.append(("", "Empty pred."))
    total = _total_scans(table)
    blocks = []
    for labelled, block in table.groupby("labelled", sort=False):
        rows = []
        for _, r in block.iterrows():
            cells = [Cell(_method_name(r) + (" (full supervision)" if labelled == FULL else "")),
                     Cell(str(r["labelled_scans"])), Cell(str(r["unlabelled_scans"])), Cell(str(int(r["n_seeds"])))]
            for m in METRICS:
                cells += [Cell(mean_std(r[f"{m}_mean"], r[f"{m}_std"]), bool(r[f"{m}_best"])),
                          Cell(_fmt(r[f"{m}_paper"])), Cell(_fmt(r[f"{m}_delta"], signed=True))]
            cells.append(Cell(str(int(r["empty_predictions"]))))
            rows.append(cells)
        blocks.append(Block(block_title(labelled, int(block["labelled_scans"].iloc[0]), total, unit), rows))
    full_paper = get_dataset(dataset).paper_full_labelled
    notes = [
        "Ours: mean ± sample std over seeds (n = seeds); a run's score is the mean over test cases"
        + classes_text(dataset) + ". Distances in voxels; an empty prediction "
        "scores 0 on all four metrics (Empty pred. counts them).",
        f"Paper: the published value (resources/paper_results.csv), matched by method label and labelled {unit}"
        + (f"; full supervision = the paper's {full_paper}-{unit.rstrip('s')} row" if full_paper else "")
        + "; Δ = ours − paper; – = not published. Bold: best of ours per column within a block.",
        *protocol_notes(main_runs, schedule_profile, data_source),
    ]
    return table, Table(f"{dataset}: test-set results (paper layout)", columns, blocks, notes)


# ---- per class -----------------------------------------------------------------------------------
def per_class_table(cases: pd.DataFrame, method_order: Sequence[str], dataset: str,
                    schedule_profile: str | None = None, data_source: str | None = None) -> tuple[pd.DataFrame, Table]:
    """Per-class Dice / 95HD (e.g. RV, Myo, LV): per-run mean over cases, then mean ± std over seeds."""
    data = get_dataset(dataset)
    class_names = dict(enumerate(data.class_names, start=1))
    cases = cases[~is_ablation(cases)]
    keys = ["method", "labelled", "seed", "class"]
    first = ["label", "method_type", "smoothness", "separation", "labelled_scans", "unlabelled_scans", "selection",
             "schedule_profile", "test_set_selection"]
    per_run = cases.groupby(keys, sort=False).agg(
        **{c: (c, "first") for c in first}, empty_predictions=("empty_prediction", "sum"),
        **{m: (m, "mean") for m in METRICS}).reset_index()
    table = summarise(per_run, method_order, keys=("method", "labelled", "class"))
    table.insert(table.columns.get_loc("class") + 1, "class_name", table["class"].map(class_names))
    table["block"] = table["labelled"] + "/" + table["class"].astype(str)
    table = best_flags(table, [f"{m}_mean" for m in METRICS], block="block").drop(columns=["block"])
    rank = {m: i for i, m in enumerate(method_order)}
    table = table.assign(method_rank=table["method"].map(lambda m: rank.get(m, len(rank))))
    table = table.sort_values(["full", "labelled_scans", "method_rank", "method", "class"]).drop(columns=["method_rank"])
    table.insert(0, "dataset", dataset)

    classes = [c for c in class_names if c in set(table["class"])]
    columns = [("", "Method"), *scans_used_columns(data.scan_unit), ("", "n")]
    for c in classes:
        columns += [(class_names[c], "Dice (%)"), (class_names[c], "95HD")]
    total = _total_scans(table)
    blocks = []
    for labelled, block in table.groupby("labelled", sort=False):
        rows = []
        for method, sub in block.groupby("method", sort=False):
            r = sub.iloc[0]
            cells = [Cell(_method_name(r) + (" (full supervision)" if labelled == FULL else "")),
                     Cell(str(r["labelled_scans"])), Cell(str(r["unlabelled_scans"])), Cell(str(int(r["n_seeds"])))]
            for c in classes:
                hit = sub[sub["class"] == c]
                if hit.empty:
                    cells += [Cell("–"), Cell("–")]
                    continue
                h = hit.iloc[0]
                cells += [Cell(mean_std(h["dice_mean"], h["dice_std"]), bool(h["dice_best"])),
                          Cell(mean_std(h["hd95_mean"], h["hd95_std"]), bool(h["hd95_best"]))]
            rows.append(cells)
        blocks.append(Block(block_title(labelled, int(block["labelled_scans"].iloc[0]), total, data.scan_unit), rows))
    legend = ", ".join(f"{n} = {d}" for n, d in zip(data.class_names, data.class_descriptions))
    notes = ["Per class: mean over test volumes per run, then mean ± sample std over seeds (n = seeds). "
             f"{legend}. 95HD in voxels. "
             "Bold: best per column within a block. The CSV also has Jaccard and ASD.",
             *protocol_notes(cases.drop_duplicates(["method", "labelled", "seed"]), schedule_profile, data_source)]
    return table.reset_index(drop=True), Table(f"{dataset}: per-class test results", columns, blocks, notes)


# ---- SS-Net ablation -----------------------------------------------------------------------------
def ablation_table(runs: pd.DataFrame, method_order: Sequence[str], dataset: str,
                   schedule_profile: str | None = None, data_source: str | None = None) -> tuple[pd.DataFrame, Table]:
    """SS-Net variants: smoothness (L_smooth) on/off x separation (L_sep) on/off, per labelled count."""
    sub = runs[runs["method_type"] == "ssnet"] if len(runs) else runs
    unit = get_dataset(dataset).scan_unit
    columns = [("", "Method"), *scans_used_columns(unit), ("", "L_smooth"), ("", "L_sep"), ("", "n"),
               *[("", title) for title in METRICS.values()]]
    if sub.empty:
        note = ("No SS-Net runs: add methods of type ssnet (e.g. ssnet, ssnet_no_smooth, ssnet_no_sep, "
                "ssnet_no_both with params smoothness/separation) to datasets.<D>.methods.")
        empty = pd.DataFrame(columns=["dataset", "method", "label", "labelled", "smoothness", "separation", "n_seeds",
                                      *[f"{m}_{s}" for m in METRICS for s in ("mean", "std", "best")]])
        return empty, Table(f"{dataset}: SS-Net ablation", columns, [], [note])
    table = summarise(sub, method_order)
    table = table.sort_values(["full", "labelled_scans", "smoothness", "separation"], kind="stable").reset_index(drop=True)
    table = best_flags(table, [f"{m}_mean" for m in METRICS])
    table.insert(0, "dataset", dataset)
    mark = {True: "✓", False: "✗"}
    total = _total_scans(runs)
    blocks = []
    for labelled, block in table.groupby("labelled", sort=False):
        rows = [[Cell(_method_name(r)), Cell(str(r["labelled_scans"])), Cell(str(r["unlabelled_scans"])),
                 Cell(mark[bool(r["smoothness"])]), Cell(mark[bool(r["separation"])]), Cell(str(int(r["n_seeds"]))),
                 *[Cell(mean_std(r[f"{m}_mean"], r[f"{m}_std"]), bool(r[f"{m}_best"])) for m in METRICS]]
                for _, r in block.iterrows()]
        blocks.append(Block(block_title(labelled, int(block["labelled_scans"].iloc[0]), total, unit), rows))
    notes = ["SS-Net with the pixel-level smoothness term (L_smooth, VAT) and the inter-class separation term "
             "(L_sep) switched on (✓) or off (✗) via methods.<m>.params.<D>.smoothness/separation; the supervised "
             "Dice loss is always on. Mean ± sample std over seeds (n = seeds). Bold: best per column within a block.",
             *protocol_notes(sub, schedule_profile, data_source)]
    return table, Table(f"{dataset}: SS-Net ablation (smoothness × separation)", columns, blocks, notes)
