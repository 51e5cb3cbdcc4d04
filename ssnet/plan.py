"""What a configuration will cost before anything runs: the grid, estimated hours, peak memory (torch-free).

For every (dataset, method, labelled) of the resolved config: runs (x seeds), iterations per run, seconds
per iteration and peak memory per job on the resolved device. Seconds per iteration come from the runs
already measured in ``results/runs`` on the same device (``run_info.json``: ``train_seconds`` over the
iterations trained), else from the benchmark figures in ``resources/step_figures.yaml``; the ``basis``
column says which. Peak memory comes from Snakemake's benchmark files of measured train jobs
(``results/benchmarks/train``), else from the figures.
"""

from __future__ import annotations

import math
from pathlib import Path

from ssnet.config import PROJECT_ROOT, enabled_datasets, labelled_values, run_config
from ssnet.config.params import read_yaml

FIGURES_PATH = PROJECT_ROOT / "resources" / "step_figures.yaml"
COLUMNS = ("dataset", "method", "labelled", "runs", "iterations", "s_per_iteration", "hours", "peak_gb", "basis")


def measured_iteration_seconds(results: Path, device: str) -> dict[tuple[str, str], list[float]]:
    """Seconds per iteration of every trained run in ``results/runs`` on ``device``, per (dataset, method)."""
    from ssnet.cost import iteration_times

    times = iteration_times(sorted((results / "runs").glob("*/*/*/seed*/run_info.json")))
    times = times[(times["device"] == device) & (times["s_per_iteration"] > 0)]
    return {key: list(group["s_per_iteration"]) for key, group in times.groupby(["dataset", "method"])}


def measured_peak_gb(results: Path) -> dict[tuple[str, str], float]:
    """Largest ``max_rss`` (GB) of the measured train jobs per (dataset, method)."""
    from ssnet.cost import read_benchmarks

    jobs = read_benchmarks(results / "benchmarks")
    jobs = jobs[(jobs["rule"] == "train") & jobs["max_rss_mb"].notna()]
    return {key: float(peak) / 1024 for key, peak in jobs.groupby(["dataset", "method"])["max_rss_mb"].max().items()}


def _figure(figures: dict | None, method_type: str, patch_size: list[int]) -> dict:
    """The benchmark figure of a method type, if one was measured at ``patch_size``."""
    if not figures or list(figures["patch_size"]) != list(patch_size):
        return {}
    return figures["methods"].get(method_type, {})


def plan(config: dict, results: str | Path = "results") -> list[dict]:
    """One row per (dataset, method, labelled) of the resolved ``config`` (see the module docstring)."""
    results, device = Path(results), config["device"]
    measured, peaks = measured_iteration_seconds(results, device), measured_peak_gb(results)
    figures = (read_yaml(FIGURES_PATH) or {}).get(device) or {}
    rows = []
    for dataset in enabled_datasets(config):
        for method in config["datasets"][dataset]["methods"]:
            key = (dataset, method)
            patch = run_config(config, dataset, method, labelled_values(config, dataset, method)[0])["training"]
            figure = _figure(figures.get(dataset), config["methods"][method]["type"], patch["patch_size"])
            if measured.get(key):
                seconds = sum(measured[key]) / len(measured[key])
                basis = f"measured: {len(measured[key])} run(s) in {results}"
            else:
                seconds = figure.get("s_per_iteration", math.nan)
                basis = figure.get("basis", f"no {device} figure at this patch size")
            peak = peaks.get(key, figure.get("peak_gb", math.nan))
            for labelled in labelled_values(config, dataset, method):
                iterations = run_config(config, dataset, method, labelled)["training"]["iterations"]
                runs = len(config["seeds"])
                rows.append({"dataset": dataset, "method": method, "labelled": labelled, "runs": runs,
                             "iterations": iterations, "s_per_iteration": seconds,
                             "hours": runs * iterations * seconds / 3600, "peak_gb": peak, "basis": basis})
    return rows


def total_hours(rows: list[dict]) -> tuple[float, int]:
    """(estimated hours of the rows that have a figure, rows without one)."""
    known = [r["hours"] for r in rows if not math.isnan(r["hours"])]
    return sum(known), len(rows) - len(known)


def format_plan(rows: list[dict], device: str) -> str:
    """The plan as an aligned text table with a total line."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3g}" if value < 100 else f"{value:.0f}"
        return str(value)

    table = [COLUMNS] + [tuple(cell(r[c]) for c in COLUMNS) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in table]
    hours, unknown = total_hours(rows)
    unit = "GPU-hours" if device == "cuda" else "CPU-hours (at the measured 2-core speed)"
    runs = sum(r["runs"] for r in rows)
    lines.append(f"total: {runs} training runs, about {hours:.0f} {unit} one job at a time"
                 + (f"; {unknown} row(s) without a figure (measure a pilot run)" if unknown else ""))
    return "\n".join(lines)
