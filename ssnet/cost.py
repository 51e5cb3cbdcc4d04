"""Compute cost of a pipeline run, and an estimate for the full paper grid (rules/cost.smk: cost).

- Per job, per rule and per grid cell (dataset x method x labelled, seeds pooled): wall time, peak
  memory and CPU time from Snakemake's ``benchmark:`` files (``results/benchmarks/<rule>/<job>.tsv``).
- Per training run: seconds per iteration, measured by the engine (``run_info.json``: ``train_seconds``
  over the iterations trained in the last attempt, ``iterations - resumed_from_iteration``).
- The full grid of a config (default: ``config.yaml``, the paper protocol): for every (dataset, method),
  runs x iterations x the measured seconds per iteration, plus runs x the measured evaluation wall time,
  as device-hours (GPU-hours when the measured runs used ``device: cuda``).

Timings only transfer between runs on the same hardware and scale: measure with the protocol's network
and patch sizes (a short pilot with fewer ``iterations`` is enough), on the GPU type the grid will use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ssnet.datasets import DATASETS
from ssnet.engine import run_info
from ssnet.io import write_csv, write_lines
from ssnet.jobs import usage_path

BENCHMARK_COLUMNS = {"s": "wall_s", "max_rss": "max_rss_mb", "cpu_time": "cpu_s", "mean_load": "mean_load"}
RUN_KEYS = ("dataset", "method", "labelled", "seed")


# ------------------------------------------------------------------------------------------ jobs
def parse_job(rule: str, job: str) -> dict:
    """Wildcards of a benchmark file's job path (``<dataset>``, ``<dataset>/ssnet/4/seed1337``, ...)."""
    parts = job.split("/")
    if len(parts) == 4 and parts[3].startswith("seed"):
        return {"dataset": parts[0], "method": parts[1], "labelled": parts[2], "seed": parts[3][4:]}
    if parts[0] in DATASETS:
        return {"dataset": parts[0], "method": None, "labelled": parts[1] if len(parts) > 1 else None,
                "seed": None}
    return {"dataset": None, "method": None, "labelled": None, "seed": None}


def read_benchmark(path: Path) -> dict:
    """One job's benchmark file: mean wall/CPU time over repeats, peak memory."""
    table = pd.read_csv(path, sep="\t")
    values = {}
    for column, name in BENCHMARK_COLUMNS.items():
        series = pd.to_numeric(table[column], errors="coerce") if column in table else pd.Series(dtype=float)
        values[name] = float(series.max() if name == "max_rss_mb" else series.mean()) if series.notna().any() \
            else math.nan
    return values


def with_served_usage(values: dict, usage_file: Path) -> dict:
    """A job's benchmark ``values`` with what the job server's forked child measured of itself, where it
    ran the job (``usage_file``, :func:`ssnet.jobs.usage_path`): its peak memory, and its CPU time added to
    that of the job process that waited for it. ``measured_in`` says which process the memory is of."""
    if not usage_file.is_file():
        return {**values, "measured_in": "job process"}
    usage = json.loads(usage_file.read_text())
    cpu = values["cpu_s"]
    return {**values, "max_rss_mb": float(usage["max_rss_mb"]),
            "cpu_s": float(usage["cpu_s"]) + (0.0 if math.isnan(cpu) else cpu), "measured_in": "job server child"}


def read_benchmarks(root: str | Path, logs: str | Path | None = None) -> pd.DataFrame:
    """All benchmark files under ``root`` (``results/benchmarks/<rule>/<job>.tsv``): one row per job;
    with ``logs``, the usage of jobs the job server ran (``<logs>/<rule>/<job>.log.usage.json``)."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        relative = path.relative_to(root).with_suffix("")
        rule, job = relative.parts[0], "/".join(relative.parts[1:])
        values = read_benchmark(path)
        if logs is not None:
            values = with_served_usage(values, usage_path(Path(logs) / rule / f"{job}.log"))
        rows.append({"rule": rule, "job": job, **parse_job(rule, job), **values})
    columns = ["rule", "job", *RUN_KEYS, *BENCHMARK_COLUMNS.values(), *(["measured_in"] if logs is not None else [])]
    return pd.DataFrame(rows, columns=columns)


def rule_summary(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: job count, total/mean/max wall time, peak and mean memory, CPU hours."""
    grouped = jobs.groupby("rule", sort=True)
    return pd.DataFrame({
        "jobs": grouped.size(),
        "wall_h_total": grouped["wall_s"].sum() / 3600,
        "wall_s_mean": grouped["wall_s"].mean(),
        "wall_s_max": grouped["wall_s"].max(),
        "max_rss_mb": grouped["max_rss_mb"].max(),
        "mean_rss_mb": grouped["max_rss_mb"].mean(),
        "cpu_h_total": grouped["cpu_s"].sum() / 3600,
    }).reset_index()


def grid_summary(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule x grid cell (dataset, method, labelled) of the per-run rules, seeds pooled."""
    runs = jobs.dropna(subset=["method", "seed"])
    grouped = runs.groupby(["rule", "dataset", "method", "labelled"], sort=True)
    return pd.DataFrame({
        "seeds": grouped.size(),
        "wall_s_mean": grouped["wall_s"].mean(),
        "wall_s_std": grouped["wall_s"].std(ddof=0),
        "wall_s_total": grouped["wall_s"].sum(),
        "max_rss_mb": grouped["max_rss_mb"].max(),
    }).reset_index()


# ------------------------------------------------------------------------------------ iterations
def iteration_times(run_infos: Iterable[str | Path]) -> pd.DataFrame:
    """Seconds per training iteration of each run, as measured by the engine."""
    rows = []
    for path in run_infos:
        info = run_info.read(path)
        if info.is_released:
            continue  # an imported checkpoint: nothing was trained
        iterations = int(info.run_config["training"]["iterations"])
        timed = iterations - int(info.resumed_from_iteration)
        seconds = info.train_seconds
        rows.append({
            "dataset": info.dataset, "method": info.method, "labelled": info.labelled,
            "seed": str(info.seed), "device": info.device, "iterations": iterations,
            "timed_iterations": timed, "train_seconds": seconds,
            "s_per_iteration": seconds / timed if seconds is not None and timed > 0 else math.nan,
        })
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "device", "iterations", "timed_iterations", "train_seconds",
                                       "s_per_iteration"])


def grid_runs(config: dict) -> list[dict]:
    """The runs of a config's grid per (dataset, method): number of runs and iterations per run."""
    from ssnet.config import enabled_datasets, labelled_values, run_config

    rows = []
    for dataset in enabled_datasets(config):
        for method in config["datasets"][dataset]["methods"]:
            labelled = labelled_values(config, dataset, method)
            iterations = {run_config(config, dataset, method, value)["training"]["iterations"] for value in labelled}
            for count in sorted(iterations):
                n = sum(run_config(config, dataset, method, v)["training"]["iterations"] == count for v in labelled)
                rows.append({"dataset": dataset, "method": method, "runs": n * len(config["seeds"]),
                             "iterations": int(count)})
    return rows


def protocol_grid(config_path: str | Path) -> list[dict]:
    """:func:`grid_runs` of a config file (rules/cost.smk: the paper protocol, ``config.yaml``)."""
    from ssnet.config import load_config

    return grid_runs(load_config([config_path]))


def grid_estimate(times: pd.DataFrame, jobs: pd.DataFrame, grid: list[dict]) -> pd.DataFrame:
    """Device-hours of a grid from measured seconds per iteration and measured evaluation wall time.

    A (dataset, method) without a measured run is estimated from the slowest measured method of the
    same dataset (``basis`` says so); without any measurement on the dataset it stays NaN.
    """
    measured = times.dropna(subset=["s_per_iteration"]).groupby(["dataset", "method"])["s_per_iteration"].mean()
    devices = times.groupby("dataset")["device"].agg(lambda d: ",".join(sorted(set(d))))
    evaluate = jobs[jobs["rule"] == "evaluate"].groupby(["dataset", "method"])["wall_s"].mean()
    rows = []
    for cell in grid:
        key = (cell["dataset"], cell["method"])
        if key in measured.index:
            s_per_it, basis = float(measured[key]), "measured"
        elif cell["dataset"] in measured.index.get_level_values(0):
            slowest = measured[cell["dataset"]].idxmax()
            s_per_it, basis = float(measured[cell["dataset"]].max()), f"not measured: as {slowest} (slowest)"
        else:
            s_per_it, basis = math.nan, "not measured"
        eval_s = float(evaluate[key]) if key in evaluate.index else (
            float(evaluate[cell["dataset"]].max()) if cell["dataset"] in evaluate.index.get_level_values(0)
            else math.nan)
        train_h = cell["runs"] * cell["iterations"] * s_per_it / 3600
        eval_h = cell["runs"] * eval_s / 3600
        rows.append({**cell, "s_per_iteration": s_per_it, "basis": basis,
                     "device": devices.get(cell["dataset"], ""), "train_hours": train_h,
                     "evaluate_hours": eval_h, "total_hours": train_h + (0 if math.isnan(eval_h) else eval_h)})
    return pd.DataFrame(rows, columns=["dataset", "method", "runs", "iterations", "s_per_iteration", "basis",
                                       "device", "train_hours", "evaluate_hours", "total_hours"])


# ---------------------------------------------------------------------------------------- report
def _markdown(table: pd.DataFrame, floats: str = "{:.4g}") -> list[str]:
    header = "| " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        cells = [floats.format(v) if isinstance(v, (float, np.floating)) and not math.isnan(v)
                 else ("-" if isinstance(v, float) and math.isnan(v) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def hours_unit(times: pd.DataFrame) -> str:
    devices = set(times["device"]) if len(times) else set()
    if devices and all(d.startswith("cuda") for d in devices):
        return "GPU-hours"
    return f"device-hours (measured on {', '.join(sorted(devices)) or 'no runs'}; GPU-hours need device: cuda runs)"


JOB_SERVER_NOTE = ("{served} of these jobs ran in the job server (`job_server: true`; `measured_in` in jobs.csv): "
                   "their `max_rss_mb` is the peak resident memory of the child forked from the server, which "
                   "counts the server's pages it shares (torch), and `cpu_s` adds the child's CPU time to the "
                   "waiting job process's (README: Job server).")


def write_cost_report(benchmarks_dir: str | Path, run_infos: Iterable[str | Path], grid: list[dict],
                      out_dir: str | Path, grid_name: str = "config.yaml",
                      logs_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Write jobs.csv, rules.csv, grid.csv, iterations.csv, estimate.csv and cost.md into ``out_dir``.
    ``logs_dir``: the jobs' logs (``logs``), where jobs the job server ran left their own usage."""
    out_dir = Path(out_dir)
    jobs = read_benchmarks(benchmarks_dir, logs_dir)
    served = int((jobs["measured_in"] == "job server child").sum()) if "measured_in" in jobs else 0
    tables = {"jobs": jobs, "rules": rule_summary(jobs), "grid": grid_summary(jobs),
              "iterations": iteration_times(run_infos)}
    tables["estimate"] = grid_estimate(tables["iterations"], jobs, grid)
    for name, table in tables.items():
        write_csv(out_dir / f"{name}.csv", table)
    unit = hours_unit(tables["iterations"])
    estimate = tables["estimate"]
    known = estimate[estimate["total_hours"].notna()]
    total = known["total_hours"].sum(min_count=1)
    missing = estimate.loc[estimate["total_hours"].isna(), ["dataset", "method"]]
    lines = [
        "# Compute cost",
        "",
        f"From {len(jobs)} Snakemake benchmark files and {len(tables['iterations'])} training runs.",
        "",
        "## Per rule",
        "",
        *([JOB_SERVER_NOTE.format(served=served), ""] if served else []),
        *_markdown(tables["rules"]),
        "",
        "## Per grid cell (seeds pooled)",
        "",
        *_markdown(tables["grid"]),
        "",
        f"## Full grid of {grid_name}: estimate in {unit}",
        "",
        "runs x iterations x measured seconds per iteration (training), plus runs x measured evaluation wall "
        "time; timings transfer only between runs at the same scale on the same hardware.",
        "",
        *_markdown(estimate),
        "",
        f"**Total: {total:.1f} {unit.split(' ')[0]}** for {int(known['runs'].sum())} of "
        f"{int(estimate['runs'].sum())} training runs" if not math.isnan(total)
        else "**Total: not measurable** (no training run measured)",
    ]
    if len(missing):
        lines += ["", "Not estimated (no measured run on the dataset): "
                  + ", ".join(f"{d}/{m}" for d, m in missing.itertuples(index=False)) + "."]
    write_lines(out_dir / "cost.md", lines)
    return tables
