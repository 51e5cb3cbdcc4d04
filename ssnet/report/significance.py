"""Paired significance of each method against SS-Net: Wilcoxon signed-rank over test cases.

Per labelled count, each method's per-case Dice (mean over the foreground classes) is averaged
over its seeds, paired with SS-Net's on the same test cases, and compared with
``scipy.stats.wilcoxon`` (two-sided, scipy's defaults). No multiple-comparison correction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ssnet.config import FULL
from ssnet.datasets import get_dataset
from ssnet.report.render import Block, Cell, Table
from ssnet.report.tables import _fmt, block_title, protocol_notes, reference_method

ALPHA = 0.05
COLUMNS = ["dataset", "labelled", "labelled_scans", "method", "label", "reference", "reference_label", "n_cases",
           "n_seeds", "n_seeds_reference", "dice", "dice_reference", "mean_difference", "statistic", "p_value",
           "significant", "comment"]


def per_case_dice(cases: pd.DataFrame) -> pd.DataFrame:
    """Dice (%) per (method, labelled, case): mean over classes within a seed, then over seeds."""
    per_seed = cases.groupby(["method", "labelled", "case", "seed"], sort=False)["dice"].mean().reset_index()
    return per_seed.groupby(["method", "labelled", "case"], sort=False).agg(
        dice=("dice", "mean"), n_seeds=("seed", "nunique")).reset_index()


def wilcoxon(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, str]:
    """(statistic, two-sided p, comment) of scipy's Wilcoxon signed-rank test of x - y."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        return np.nan, np.nan, "no paired cases"
    if np.allclose(x - y, 0.0):
        return np.nan, np.nan, "identical per-case Dice"
    try:
        result = stats.wilcoxon(x, y)
    except ValueError as exc:
        return np.nan, np.nan, str(exc)
    return float(result.statistic), float(result.pvalue), ""


def significance(cases: pd.DataFrame, method_order: Sequence[str], dataset: str) -> pd.DataFrame:
    """One row per (labelled count, method != SS-Net) where SS-Net was run at that count."""
    reference = reference_method(cases, method_order) if len(cases) else None
    if reference is None:
        return pd.DataFrame(columns=COLUMNS)
    dice = per_case_dice(cases)
    info = cases.drop_duplicates(["method", "labelled"]).set_index(["method", "labelled"])
    rank = {m: i for i, m in enumerate(method_order)}
    rows = []
    for labelled in sorted(set(dice["labelled"]) - {FULL}, key=lambda v: int(info.xs(v, level=1)["labelled_scans"].iloc[0])):
        block = dice[dice["labelled"] == labelled]
        ref = block[block["method"] == reference].set_index("case")
        if ref.empty:
            continue
        for method in sorted(set(block["method"]) - {reference}, key=lambda m: (rank.get(m, len(rank)), m)):
            other = block[block["method"] == method].set_index("case")
            common = [c for c in ref.index if c in other.index]
            x, y = other.loc[common, "dice"].to_numpy(), ref.loc[common, "dice"].to_numpy()
            statistic, p_value, comment = wilcoxon(x, y)
            rows.append({
                "dataset": dataset, "labelled": labelled, "labelled_scans": int(info.loc[(method, labelled), "labelled_scans"]),
                "method": method, "label": info.loc[(method, labelled), "label"], "reference": reference,
                "reference_label": info.loc[(reference, labelled), "label"], "n_cases": len(common),
                "n_seeds": int(other["n_seeds"].max()), "n_seeds_reference": int(ref["n_seeds"].max()),
                "dice": float(np.mean(x)) if len(x) else np.nan, "dice_reference": float(np.mean(y)) if len(y) else np.nan,
                "mean_difference": float(np.mean(x - y)) if len(x) else np.nan, "statistic": statistic,
                "p_value": p_value, "significant": bool(p_value < ALPHA) if not np.isnan(p_value) else False,
                "comment": comment,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def _classes_averaged(dataset: str) -> str:
    """`` averaged over the 3 classes and`` for a multi-class dataset, empty for one foreground class."""
    n = len(get_dataset(dataset).class_names)
    return f" averaged over the {n} classes and" if n > 1 else ""


def _p(value: float) -> str:
    if np.isnan(value):
        return "–"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def significance_table(cases: pd.DataFrame, method_order: Sequence[str], dataset: str,
                       schedule_profile: str | None = None, data_source: str | None = None) -> tuple[pd.DataFrame, Table]:
    frame = significance(cases, method_order, dataset)
    reference = reference_method(cases, method_order) if len(cases) else None
    ref_label = frame["reference_label"].iloc[0] if len(frame) else "SS-Net"
    columns = [("", "Method"), ("", "cases"), ("", "n"), ("Dice (%)", "method"), ("Dice (%)", ref_label),
               ("Dice (%)", "Δ"), ("Wilcoxon", "W"), ("Wilcoxon", "p")]
    blocks = []
    for labelled, block in frame.groupby("labelled", sort=False):
        rows = [[Cell(str(r["label"])), Cell(str(r["n_cases"])), Cell(f"{r['n_seeds']} / {r['n_seeds_reference']}"),
                 Cell(_fmt(r["dice"])), Cell(_fmt(r["dice_reference"])), Cell(_fmt(r["mean_difference"], signed=True)),
                 Cell(_fmt(r["statistic"])), Cell(_p(r["p_value"]) + (f" ({r['comment']})" if r["comment"] else ""),
                                                     bool(r["significant"]))]
                for _, r in block.iterrows()]
        blocks.append(Block(block_title(labelled, int(block["labelled_scans"].iloc[0]), None,
                                        get_dataset(dataset).scan_unit), rows))
    if reference is None:
        notes = ["No SS-Net runs (a method of type ssnet with smoothness and separation on): nothing to compare with."]
    else:
        notes = [f"Each method against {ref_label} ({reference}) at the same labelled count: two-sided Wilcoxon "
                 "signed-rank test (scipy.stats.wilcoxon) over the paired test cases, on per-case Dice"
                 + _classes_averaged(dataset)
                 + " averaged over seeds (n = seeds method / reference). Δ = method − reference (mean over cases). "
                 f"Bold: p < {ALPHA}; no multiple-comparison correction."]
    notes += protocol_notes(cases.drop_duplicates(["method", "labelled", "seed"]), schedule_profile, data_source)
    return frame, Table(f"{dataset}: paired significance against SS-Net", columns, blocks, notes)
