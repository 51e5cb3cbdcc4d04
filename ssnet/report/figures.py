"""Figures of the aggregation stage (matplotlib, one consistent style)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ssnet.io import atomic_path  # noqa: E402

STYLE = {"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 9}


def dice_vs_labelled(runs: pd.DataFrame, method_order: Sequence[str], dataset: str, png: Path, pdf: Path) -> None:
    """Dice against the number of labelled scans, one line per method: seed mean, +- std bar, seed dots."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
        for i, method in enumerate(m for m in method_order if m in set(runs["method"])):
            sub = runs[runs["method"] == method]
            stats = sub.groupby("labelled_scans")["dice"].agg(["mean", "std"]).reset_index()
            color = f"C{i}"
            ax.errorbar(stats["labelled_scans"], stats["mean"], yerr=stats["std"].fillna(0), color=color,
                        marker="o", capsize=3, label=sub["label"].iloc[0])
            ax.scatter(sub["labelled_scans"], sub["dice"], color=color, s=10, alpha=0.5)
        ax.set_xscale("log")
        ticks = sorted(set(runs["labelled_scans"]))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled scans")
        ax.set_ylabel("Dice (%)")
        ax.set_title(f"{dataset}: Dice vs labelled scans (mean ± std over seeds; dots = seeds)")
        ax.legend(frameon=False, fontsize=8)
        fig.tight_layout()
        for path, fmt in ((png, "png"), (pdf, "pdf")):
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt)
        plt.close(fig)
