"""Reproducibility summary (one row per run), resolved config + versions page, and the results summary.

- :func:`provenance`: ``reproducibility.csv`` (per run: git commit, config hash, seed, selection,
  library versions), the resolved configuration as YAML, and an HTML page with both plus the
  versions of the report environment (for the Snakemake report).
- :func:`summary`: ``results/summary.md``, the paper-vs-ours comparison that the README's results
  section points to (generated, never hand-written).
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml

from ssnet.io import write_csv
from ssnet.report.render import HTML_STYLE, write_text

REPORT_PACKAGES = ["ssnet", "snakemake", "numpy", "pandas", "scipy", "matplotlib", "torch", "h5py", "SimpleITK",
                   "medpy", "pynrrd", "jinja2", "docutils", "pygments"]


def reproducibility_frame(info_files: Sequence[str | Path]) -> pd.DataFrame:
    rows = []
    for path in info_files:
        info = json.loads(Path(path).read_text())
        run_cfg = info.get("run_config", {})
        row = {"dataset": info["dataset"], "method": info["method"], "label": run_cfg.get("method_label", info["method"]),
               "labelled": str(info["labelled"]), "seed": info["seed"], "git_commit": info.get("git_commit", ""),
               "config_hash": info.get("config_hash", ""), "selection": info.get("selection", ""),
               "test_set_selection": info.get("test_set_selection", False),
               "schedule_profile": run_cfg.get("schedule_profile", ""),
               "selected_iteration": info.get("selected_iteration"), "device": info.get("device", ""),
               "train_seconds": info.get("train_seconds"), "run_info": str(path)}
        row.update({f"version_{k}": v for k, v in sorted(info.get("versions", {}).items())})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values(["dataset", "method", "labelled", "seed"]).reset_index(drop=True) if len(frame) else frame


def report_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in REPORT_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="results", na_rep="–", escape=True)


def provenance(info_files: Sequence[str | Path], config: dict, outputs: dict[str, str]) -> None:
    """Write ``outputs`` = {csv, config_yaml, html}."""
    frame = reproducibility_frame(info_files)
    write_csv(outputs["csv"], frame)
    resolved = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
    write_text(outputs["config_yaml"], resolved)
    versions = report_versions()
    version_cols = [c for c in frame.columns if c.startswith("version_")]
    distinct = {c.removeprefix("version_"): ", ".join(sorted(set(map(str, frame[c].dropna())))) for c in version_cols}
    commits = sorted(set(frame["git_commit"])) if len(frame) else []
    dirty = [c for c in commits if str(c).endswith("+dirty")]
    warnings = []
    if len(commits) > 1:
        warnings.append(f"WARNING: the runs come from {len(commits)} different git commits.")
    if dirty:
        warnings.append("WARNING: some runs were trained from a checkout with uncommitted changes (+dirty).")
    body = [
        "<h3>Reproducibility</h3>",
        f"<p class='note'>{len(frame)} runs; git commits: {html.escape(', '.join(map(str, commits)) or '–')}.</p>",
        *[f"<p class='note warning'>{html.escape(w)}</p>" for w in warnings],
        "<h4>Library versions used for training (run_info.json)</h4>",
        _html_table(pd.DataFrame({"package": list(distinct), "version(s)": list(distinct.values())})),
        "<h4>Report environment</h4>",
        _html_table(pd.DataFrame({"package": list(versions), "version": list(versions.values())})),
        "<h4>Resolved configuration (config.yaml + overlays)</h4>",
        f"<pre>{html.escape(resolved)}</pre>",
        "<h4>Per run</h4>",
        _html_table(frame.drop(columns=["run_info"] + version_cols, errors="ignore")),
    ]
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Reproducibility</title><style>{HTML_STYLE}"
            "pre { background: #f6f6f6; padding: 8px; font-size: 12px; }</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    write_text(outputs["html"], page)


def summary(table_files: Sequence[str | Path], data_sources: dict[str, str], out_md: str | Path) -> None:
    """Paper-vs-ours summary over every dataset's main table (the README's results section links here)."""
    lines = ["# Results: ours vs the published numbers", "",
             "Generated by the `results_summary` rule from `results/tables/<D>/main_table.csv`; do not edit.", ""]
    for path in table_files:
        table = pd.read_csv(path, dtype={"labelled": str})
        if table.empty:
            continue
        dataset = str(table["dataset"].iloc[0])
        source = data_sources.get(dataset, "raw")
        lines.append(f"## {dataset}")
        lines.append("")
        if source == "synthetic":
            lines += ["**Synthetic demo data**: the published values below are not comparable (layout check only).", ""]
        if table["test_set_selection"].any():
            lines += ["**Test-set selection (best_test) was used**: these numbers leak the test set.", ""]
        compared = table.dropna(subset=["dice_paper"])
        lines += ["| labelled | method | n | Dice ours | Dice paper | Δ Dice | 95HD ours | 95HD paper | Δ 95HD |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in table.iterrows():
            lines.append(
                f"| {r['labelled_scans'] if r['labelled'] != 'all' else 'all (' + str(r['labelled_scans']) + ')'} "
                f"| {r['label']} | {int(r['n_seeds'])} | {_pm(r['dice_mean'], r['dice_std'])} | {_num(r['dice_paper'])} "
                f"| {_num(r['dice_delta'], True)} | {_pm(r['hd95_mean'], r['hd95_std'])} | {_num(r['hd95_paper'])} "
                f"| {_num(r['hd95_delta'], True)} |")
        lines.append("")
        if len(compared):
            within = (compared["dice_delta"].abs() <= compared["dice_std"].fillna(0)).sum()
            lines.append(f"Dice differences (ours − paper) over {len(compared)} published rows: mean "
                         f"{compared['dice_delta'].mean():+.2f}, range {compared['dice_delta'].min():+.2f} to "
                         f"{compared['dice_delta'].max():+.2f}; {within} of {len(compared)} within one seed std.")
        else:
            lines.append("No row has a published counterpart.")
        selection = ", ".join(sorted(set(table["selection"])))
        profile = ", ".join(sorted(set(table["schedule_profile"])))
        lines += ["", f"Model selection: {selection}. Schedule profile: {profile}. Full tables: "
                  f"`results/tables/{dataset}/`; figures: `results/figures/{dataset}/`; HTML report: `results/report.html`.", ""]
    write_text(out_md, "\n".join(lines).rstrip() + "\n")


def _num(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _pm(mean: float, std: float) -> str:
    return _num(mean) if std is None or (isinstance(std, float) and np.isnan(std)) else f"{mean:.2f} ± {std:.2f}"
