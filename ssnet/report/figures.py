"""Figures of the aggregation stage (matplotlib, one consistent style; each saved as PNG and PDF).

Every figure uses :data:`STYLE` and gives a method the same colour everywhere (its position in
the dataset's method order), so the report reads as one set.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ssnet.config import FULL  # noqa: E402
from ssnet.datasets import get_dataset  # noqa: E402
from ssnet.io import atomic_path  # noqa: E402

STYLE = {"figure.dpi": 120, "savefig.dpi": 150, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8,
         "font.family": "DejaVu Sans"}
CLASS_COLOURS = ("#ffd400", "#00d5ff", "#ff4f9a", "#7cff4f", "#ff8c1a")  # foreground labels 1, 2, ... (cycled)


def method_colours(method_order: Sequence[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {m: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(method_order)}


def save(fig, png: str | Path, pdf: str | Path) -> None:
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
    plt.close(fig)


def labelled_title(labelled: str, labelled_scans: int | None, unit: str) -> str:
    """``full supervision`` or ``4 labelled scans`` (``unit``: the dataset's ``scan_unit``)."""
    if labelled == FULL:
        return "full supervision"
    return f"{labelled_scans if labelled_scans is not None else labelled} labelled {unit}"


# ---- Dice vs labelled count ---------------------------------------------------------------------
def dice_vs_labelled(runs: pd.DataFrame, method_order: Sequence[str], dataset: str, png: Path, pdf: Path) -> None:
    """Dice against the number of labelled scans, one line per method: seed mean, +- std bar, seed dots."""
    colours = method_colours(method_order)
    unit = get_dataset(dataset).scan_unit
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
        for method in (m for m in method_order if m in set(runs["method"])):
            sub = runs[runs["method"] == method]
            stats = sub.groupby("labelled_scans")["dice"].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats["labelled_scans"], stats["mean"], yerr=stats["std"].fillna(0), color=colours[method],
                        marker="o", capsize=3, label=sub["label"].iloc[0])
            ax.scatter(sub["labelled_scans"], sub["dice"], color=colours[method], s=10, alpha=0.5)
        ax.set_xscale("log")
        ticks = sorted(set(runs["labelled_scans"]))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(f"labelled {unit}")
        ax.set_ylabel("Dice (%)")
        ax.set_title(f"{dataset}: Dice vs labelled {unit} (mean ± std over seeds; dots = seeds)")
        ax.legend(frameon=False)
        fig.tight_layout()
        save(fig, png, pdf)


# ---- training curves -----------------------------------------------------------------------------
def _smooth(values: pd.Series, n_points: int) -> pd.Series:
    window = max(1, n_points // 50)
    return values.rolling(window, min_periods=1).mean()


def training_curves(logs: list[dict], method_order: Sequence[str], title: str, png: Path, pdf: Path) -> None:
    """One panel per loss term (and validation Dice); per method the seed mean, shaded min-max over seeds.

    ``logs``: dicts with method, label, seed, ``train`` (train_log.csv frame), ``val`` (val_log.csv frame).
    Training curves are smoothed with a running mean over 2% of the iterations.
    """
    colours = method_colours(method_order)
    terms = []
    for log in logs:
        terms += [c for c in log["train"].columns if c not in ("iteration", "lr") and c not in terms]
    terms = sorted(terms, key=lambda t: (t != "loss", t))
    panels = terms + ["val_dice"]
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.5 * nrows), squeeze=False)
        for ax, panel in zip(axes.flat, panels):
            for method in (m for m in method_order if any(log["method"] == m for log in logs)):
                mine = [log for log in logs if log["method"] == method]
                key, frames = ("val", "val_dice") if panel == "val_dice" else ("train", panel)
                series = [log[key].set_index("iteration")[frames] for log in mine
                          if frames in log[key].columns and len(log[key])]
                if not series:
                    continue
                joined = pd.concat(series, axis=1)
                if key == "train":
                    joined = joined.apply(lambda s: _smooth(s, len(joined)))
                else:
                    joined = joined * 100.0
                x = joined.index.to_numpy()
                ax.plot(x, joined.mean(axis=1), color=colours[method], lw=1.2,
                        label=f"{mine[0]['label']} (n={len(series)})", marker="o" if key == "val" else None, ms=2.5)
                if len(series) > 1:
                    ax.fill_between(x, joined.min(axis=1), joined.max(axis=1), color=colours[method], alpha=0.2, lw=0)
            ax.set_title("validation Dice (%)" if panel == "val_dice" else panel)
            ax.set_xlabel("iteration")
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(4, max(1, len(labels))), frameon=False,
                   bbox_to_anchor=(0.5, 1.0 + 0.06 / nrows))
        fig.suptitle(title, y=1.0 + 0.12 / nrows)
        fig.tight_layout(rect=(0, 0, 1, 1.0 - 0.08 / nrows))
        save(fig, png, pdf)


# ---- per-case Dice distributions -----------------------------------------------------------------
def dice_distribution(per_case: pd.DataFrame, method_order: Sequence[str], title: str, png: Path, pdf: Path) -> None:
    """Box plot plus one dot per test case (per-case Dice averaged over seeds) for each method.

    ``per_case``: columns method, label, case, dice (%), n_seeds; a full-supervision reference may be
    included as method ``<method> (all)`` with its own label.
    """
    colours = method_colours(method_order)
    methods = list(dict.fromkeys(per_case["method"]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(methods) + 1.5), 3.4))
        rng = np.random.default_rng(0)
        for i, method in enumerate(methods):
            sub = per_case[per_case["method"] == method]
            colour = colours.get(method.split(" ")[0], "0.4")
            ax.boxplot(sub["dice"], positions=[i], widths=0.55, showfliers=False,
                       medianprops={"color": colour, "lw": 1.5}, boxprops={"color": "0.3"},
                       whiskerprops={"color": "0.3"}, capprops={"color": "0.3"})
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(sub)), sub["dice"], s=12, color=colour, alpha=0.7, zorder=3)
        labels = [textwrap.fill(str(per_case[per_case["method"] == m]["label"].iloc[0]), 12)
                  + f"\n(n={int(per_case[per_case['method'] == m]['n_seeds'].max())})" for m in methods]
        ax.set_xticks(range(len(methods)), labels)
        ax.set_ylabel("per-case Dice (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(title)
        fig.tight_layout()
        save(fig, png, pdf)


# ---- qualitative comparison ----------------------------------------------------------------------
def qualitative(columns: list[dict], title: str, png: Path, pdf: Path) -> None:
    """Rows = test cases (the same slice everywhere), columns = image, ground truth, each method.

    ``columns``: dicts with ``label`` and ``slices`` (from :func:`ssnet.evaluation.evaluate.read_qualitative`);
    the first entry provides the image and ground truth. Labels are drawn as contours, one colour per class.
    """
    if not columns or not columns[0]["slices"]:
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots(figsize=(4, 1.5))
            ax.axis("off")
            ax.text(0.5, 0.5, "no saved predictions (predictions.npz) for this labelled count", ha="center", va="center")
            ax.set_title(title)
            save(fig, png, pdf)
        return
    reference = columns[0]["slices"]
    n_rows, n_cols = len(reference), len(columns) + 2
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 1.9 * n_rows + 0.4), squeeze=False)
        for r, item in enumerate(reference):
            image = item["image"]
            panels = [("image", None), ("ground truth", item["label"])]
            panels += [(col["label"], col["slices"][r]["prediction"] if r < len(col["slices"]) else None) for col in columns]
            for c, (name, mask) in enumerate(panels):
                ax = axes[r, c]
                ax.imshow(image.T, cmap="gray", origin="lower", interpolation="nearest")
                if mask is not None:
                    for cls in np.unique(mask[mask > 0]):
                        colour = CLASS_COLOURS[(int(cls) - 1) % len(CLASS_COLOURS)]
                        ax.contour((mask == cls).T.astype(float), levels=[0.5], colors=[colour], linewidths=0.9)
                    if c >= 2:
                        dice = _dice(mask, item["label"])
                        ax.text(0.03, 0.04, f"Dice {dice:.1f}", transform=ax.transAxes, color="white", fontsize=7,
                                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name, fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"{item['case']}\nslice {item['slice']}", fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        save(fig, png, pdf)


def _dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """Mean foreground Dice (%) over the classes present in either map of this slice."""
    scores = []
    for cls in sorted((set(np.unique(label)) | set(np.unique(prediction))) - {0}):
        p, g = prediction == cls, label == cls
        scores.append(200.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum()))
    return float(np.mean(scores)) if scores else 100.0
