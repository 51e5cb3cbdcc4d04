"""Compute cost (ssnet/cost.py, rules/cost.smk): benchmark summaries and the paper-grid estimate."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from ssnet.config import load_config
from ssnet.cost import (grid_estimate, grid_runs, grid_summary, iteration_times, read_benchmarks, rule_summary,
                        write_cost_report)
from ssnet.engine import run_info
from ssnet.jobs import usage_path
from test_preemption import ITERATIONS, RUN, reference  # noqa: F401  (the shared, cached reference run)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _benchmark(root: Path, rule: str, job: str, rows: list[tuple[float, float, float]]) -> None:
    path = root / rule / f"{job}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t50\t{cpu}\n" for s, rss, cpu in rows))


def _run_info(path: Path, dataset, method, labelled, seed, iterations, seconds, resumed=0, device="cuda") -> Path:
    run_info.write(path, run_info.RunInfo(
        dataset=dataset, method=method, method_type=method, labelled=labelled, seed=seed, config_hash="h",
        git_commit="abc", versions={}, device=device, selection="last", test_set_selection=False,
        selected_iteration=iterations, best_val_dice=None, n_labelled=1, n_labelled_scans=1, n_unlabelled=0,
        n_unlabelled_scans=0, n_validation=0, labelled_items=[], validation_items=[], train_seconds=seconds,
        run_config={"training": {"iterations": iterations}}, resumed_from_iteration=resumed))
    return path


@pytest.fixture
def benchmarks(tmp_path) -> Path:
    root = tmp_path / "benchmarks"
    _benchmark(root, "preprocess", "LA", [(30.0, 900.0, 25.0)])
    _benchmark(root, "train", "LA/ssnet/4/seed1", [(100.0, 2000.0, 90.0)])
    _benchmark(root, "train", "LA/ssnet/4/seed2", [(140.0, 2100.0, 130.0)])
    _benchmark(root, "train", "LA/supervised/all/seed1", [(50.0, 1500.0, 45.0), (70.0, 1700.0, 60.0)])  # repeats
    _benchmark(root, "evaluate", "LA/ssnet/4/seed1", [(20.0, 800.0, 19.0)])
    _benchmark(root, "evaluate", "LA/ssnet/4/seed2", [(40.0, 820.0, 39.0)])
    _benchmark(root, "provenance", "provenance", [(1.0, 100.0, "NA")])  # unparsable value -> NaN
    return root


def test_benchmark_summaries(benchmarks):
    jobs = read_benchmarks(benchmarks)
    assert len(jobs) == 7
    supervised = jobs[(jobs["rule"] == "train") & (jobs["method"] == "supervised")].iloc[0]
    assert (supervised["wall_s"], supervised["max_rss_mb"]) == (60.0, 1700.0)  # mean time, peak memory
    assert supervised[["dataset", "labelled", "seed"]].tolist() == ["LA", "all", "1"]
    assert math.isnan(jobs.loc[jobs["rule"] == "provenance", "cpu_s"].iloc[0])

    rules = rule_summary(jobs).set_index("rule")
    assert rules.loc["train", "jobs"] == 3
    assert rules.loc["train", "wall_h_total"] == pytest.approx((100 + 140 + 60) / 3600)
    assert rules.loc["train", "max_rss_mb"] == 2100 and rules.loc["evaluate", "wall_s_max"] == 40

    grid = grid_summary(jobs).set_index(["rule", "dataset", "method", "labelled"])
    cell = grid.loc[("train", "LA", "ssnet", "4")]
    assert cell["seeds"] == 2 and cell["wall_s_mean"] == 120 and cell["wall_s_std"] == 20
    assert ("preprocess", "LA", None, None) not in grid.index  # dataset-level jobs are not grid cells


def test_iteration_times_count_only_the_last_attempt(tmp_path):
    infos = [_run_info(tmp_path / "a.json", "LA", "ssnet", "4", 1, 1000, 500.0),
             _run_info(tmp_path / "b.json", "LA", "ssnet", "4", 2, 1000, 300.0, resumed=400)]
    times = iteration_times(infos).set_index("seed")
    assert times.loc["1", "s_per_iteration"] == 0.5
    assert times.loc["2", "timed_iterations"] == 600 and times.loc["2", "s_per_iteration"] == 0.5


def test_grid_estimate_scales_measured_iteration_times(benchmarks, tmp_path):
    jobs = read_benchmarks(benchmarks)
    times = iteration_times([_run_info(tmp_path / "a.json", "LA", "ssnet", "4", 1, 1000, 400.0),
                             _run_info(tmp_path / "b.json", "LA", "ssnet", "4", 2, 1000, 600.0),
                             _run_info(tmp_path / "c.json", "LA", "supervised", "all", 1, 1000, 100.0)])
    grid = [{"dataset": "LA", "method": "ssnet", "runs": 6, "iterations": 15000},
            {"dataset": "LA", "method": "uamt", "runs": 6, "iterations": 6000},
            {"dataset": "ACDC", "method": "ssnet", "runs": 6, "iterations": 30000}]
    estimate = grid_estimate(times, jobs, grid).set_index(["dataset", "method"])
    ssnet = estimate.loc[("LA", "ssnet")]
    assert ssnet["s_per_iteration"] == 0.5 and ssnet["basis"] == "measured" and ssnet["device"] == "cuda"
    assert ssnet["train_hours"] == pytest.approx(6 * 15000 * 0.5 / 3600)
    assert ssnet["evaluate_hours"] == pytest.approx(6 * 30 / 3600)  # mean evaluation wall time x runs
    uamt = estimate.loc[("LA", "uamt")]  # not measured: the slowest measured method of the dataset
    assert uamt["s_per_iteration"] == 0.5 and "as ssnet" in uamt["basis"]
    assert math.isnan(estimate.loc[("ACDC", "ssnet"), "train_hours"])


def test_jobs_the_job_server_ran_report_the_forked_childs_usage(benchmarks, tmp_path):
    """A job whose log has a usage file (written by the job server's child): its memory is the child's,
    its CPU time the child's plus the waiting job process's; the other jobs keep their benchmark values."""
    logs = tmp_path / "logs"
    served = usage_path(logs / "train" / "LA/ssnet/4/seed1.log")
    served.parent.mkdir(parents=True)
    served.write_text(json.dumps({"max_rss_mb": 3000.5, "cpu_s": 400.0}))
    jobs = read_benchmarks(benchmarks, logs).set_index(["rule", "job"])
    assert jobs.loc[("train", "LA/ssnet/4/seed1"), ["max_rss_mb", "cpu_s", "measured_in"]].tolist() == [
        3000.5, 490.0, "job server child"]
    assert jobs.loc[("train", "LA/ssnet/4/seed2"), ["max_rss_mb", "measured_in"]].tolist() == [2100.0, "job process"]
    (logs / "provenance").mkdir()
    usage_path(logs / "provenance" / "provenance.log").write_text(json.dumps({"max_rss_mb": 400, "cpu_s": 2.5}))
    assert read_benchmarks(benchmarks, logs).set_index("rule").loc["provenance", "cpu_s"] == 2.5  # NaN + 2.5
    grid = [{"dataset": "LA", "method": "ssnet", "runs": 6, "iterations": 15000}]
    write_cost_report(benchmarks, [], grid, tmp_path / "served", logs_dir=logs)
    assert "2 of these jobs ran in the job server" in (tmp_path / "served" / "cost.md").read_text()
    assert "measured_in" in pd.read_csv(tmp_path / "served" / "jobs.csv")


def test_paper_grid_counts_runs_of_config_yaml():
    config = load_config([ROOT / "config.yaml"])
    grid = {(row["dataset"], row["method"]): row for row in grid_runs(config)}
    seeds = len(config["seeds"])
    for dataset, block in config["datasets"].items():
        for method in block["methods"]:
            full = config["methods"][method]["type"] == "supervised" and block.get("full_supervision", True)
            assert grid[(dataset, method)]["runs"] == seeds * (len(block["labelled"]) + full)
    assert grid[("LA", "ssnet")]["iterations"] == config["datasets"]["LA"]["training"]["iterations"]


def test_report_names_gpu_hours_only_for_cuda_runs(benchmarks, tmp_path):
    grid = [{"dataset": "LA", "method": "ssnet", "runs": 6, "iterations": 15000}]
    info = [_run_info(tmp_path / "a.json", "LA", "ssnet", "4", 1, 1000, 400.0)]
    write_cost_report(benchmarks, info, grid, tmp_path / "gpu")
    report = (tmp_path / "gpu" / "cost.md").read_text()
    assert "estimate in GPU-hours" in report and "**Total: 10.1 GPU-hours** for 6 of 6 training runs" in report
    info = [_run_info(tmp_path / "b.json", "LA", "ssnet", "4", 1, 1000, 400.0, device="cpu")]
    write_cost_report(benchmarks, info, grid, tmp_path / "cpu")
    assert "measured on cpu" in (tmp_path / "cpu" / "cost.md").read_text()
    assert "job server" not in (tmp_path / "cpu" / "cost.md").read_text()
    assert {p.name for p in (tmp_path / "cpu").iterdir()} == {
        "cost.md", "jobs.csv", "rules.csv", "grid.csv", "iterations.csv", "estimate.csv"}


def test_cost_rule_on_a_workflow_run(reference):  # noqa: F811
    """The cost job alone, after the (cached) reference run of the demo slice."""
    shutil.rmtree(reference / "results/cost", ignore_errors=True)  # also when `all` already made it
    done = subprocess.run([sys.executable, "-m", "snakemake", "results/cost/cost.md", "--cores", "1",
                           "--configfile", "configs/demo.yaml", "slice.yaml"],
                          cwd=reference, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rule train" not in done.stderr and "cost" in done.stderr  # only the cost job ran
    rules = pd.read_csv(reference / "results/cost/rules.csv").set_index("rule")
    assert {"make_synthetic", "preprocess", "train", "evaluate", "aggregate"} <= set(rules.index)
    iterations = pd.read_csv(reference / "results/cost/iterations.csv")
    assert len(iterations) == 1 and iterations["s_per_iteration"].iloc[0] > 0
    info = json.loads((reference / RUN / "run_info.json").read_text())
    assert iterations["s_per_iteration"].iloc[0] == pytest.approx(info["train_seconds"] / ITERATIONS)
    estimate = pd.read_csv(reference / "results/cost/estimate.csv")
    config = load_config([ROOT / "config.yaml"])
    assert len(estimate) == sum(len(b["methods"]) for b in config["datasets"].values())
    measured = estimate[estimate["basis"] == "measured"]
    assert measured[["dataset", "method"]].values.tolist() == [["LA", "supervised"]]
    report = (reference / "results/cost/cost.md").read_text()
    assert "device-hours (measured on cpu" in report
    # configs/demo.yaml: job_server true, a local run: the served jobs' children measured themselves
    jobs = pd.read_csv(reference / "results/cost/jobs.csv")
    served = jobs[jobs["measured_in"] == "job server child"]  # jobs that start before the server is up run alone
    assert "aggregate" in set(served["rule"]) and (served["max_rss_mb"] > 100).all() and (served["cpu_s"] > 0).all()
    assert "of these jobs ran in the job server" in report
