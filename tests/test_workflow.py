"""The Snakemake workflow as a user runs it, in a fresh copy of the project's tracked files."""

import os

import pandas as pd
import pytest

from conftest import FAST_DEMO, copy_project, run_snakemake
from ssnet.config import labelled_values, load_config


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("checkout"))


def test_missing_real_data_stops_with_a_clear_message(checkout):
    result = run_snakemake(checkout, "-n", "--cores", "8", "all")
    assert result.returncode != 0
    assert "datasets.LA.raw_dir = 'data/LA' is not a folder" in result.stderr
    assert "datasets.ACDC.raw_dir" in result.stderr and "Training Set" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_config_key_stops_naming_the_key(checkout, tmp_path):
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("datasets: {LA: {training: {iteratoins: 5}}}\n")
    result = run_snakemake(checkout, "all", "-n", "--cores", "1", "--configfile", "configs/demo.yaml", str(overlay))
    assert result.returncode != 0
    assert "datasets.LA.training.iteratoins" in result.stderr and "Traceback" not in result.stderr


def test_demo_dag_end_to_end(demo_run):
    checkout, result = demo_run
    assert result.returncode == 0, result.stderr[-4000:]
    config = load_config([checkout / name for name in ("config.yaml", *FAST_DEMO[1:])])
    for dataset in ("LA", "ACDC"):
        expected = {(m, lab, s) for m in config["datasets"][dataset]["methods"]
                    for lab in labelled_values(config, dataset, m) for s in config["seeds"]}
        runs = pd.read_csv(checkout / "results" / "tables" / dataset / "runs.csv", dtype={"labelled": str})
        assert set(zip(runs["method"], runs["labelled"], runs["seed"])) == expected
        assert runs["dice"].between(0, 100).all()
        table = pd.read_csv(checkout / "results" / "tables" / dataset / "main_table.csv", dtype={"labelled": str})
        assert "all" in set(table["labelled"])
        markdown = (checkout / "results" / "tables" / dataset / "main_table.md").read_text()
        assert "Dice" in markdown and "best_val" in markdown
        assert "\\toprule" in (checkout / "results" / "tables" / dataset / "main_table.tex").read_text()
        for ext in ("png", "pdf"):
            assert (checkout / "results" / "figures" / dataset / f"dice_vs_labelled.{ext}").stat().st_size > 1000
        assert any((checkout / "results" / "benchmarks" / "train" / dataset).rglob("*.tsv"))
    # nothing left to do: a second invocation is a no-op
    again = run_snakemake(checkout, "all", "-n", "--cores", "2", *FAST_DEMO)
    assert "Nothing to be done" in again.stdout + again.stderr


def _planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, dataset wildcard or '') of every job of a dry run's output."""
    jobs, rule = [], None
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs.append((rule, ""))
        elif rule and line.strip().startswith("wildcards:") and "dataset=" in line:
            jobs[-1] = (rule, line.split("dataset=")[1].split(",")[0].strip())
    return jobs


def _raw_file(checkout, dataset):
    return sorted((checkout / "results" / "synthetic" / dataset / "raw").rglob("*.nrrd"))[0]


def test_a_changed_raw_file_reruns_its_dataset_and_nothing_else(demo_run):
    checkout, result = demo_run
    assert result.returncode == 0, result.stderr[-4000:]
    raw = _raw_file(checkout, "LA")
    before = raw.stat()
    try:
        os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # touch
        plan = run_snakemake(checkout, "all", "-n", "--cores", "2", *FAST_DEMO)
        jobs = _planned_jobs(plan.stdout)
        config = load_config([checkout / name for name in ("config.yaml", *FAST_DEMO[1:])])
        n_runs = sum(len(labelled_values(config, "LA", m)) for m in config["datasets"]["LA"]["methods"])
        n_runs *= len(config["seeds"])
        assert jobs.count(("check_inputs", "LA")) == jobs.count(("preprocess", "LA")) == 1
        assert jobs.count(("train", "LA")) == jobs.count(("evaluate", "LA")) == n_runs
        assert not [job for job in jobs if job[1] == "ACDC"]  # the other dataset is untouched
        assert ("make_synthetic", "LA") not in jobs
    finally:
        os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = run_snakemake(checkout, "all", "-n", "--cores", "2", *FAST_DEMO)
    assert "Nothing to be done" in again.stdout + again.stderr  # the old fingerprint is found again


def test_a_failed_input_check_keeps_the_last_good_output(demo_run):
    checkout, result = demo_run
    assert result.returncode == 0, result.stderr[-4000:]
    raw = _raw_file(checkout, "LA")
    content, before = raw.read_bytes(), raw.stat()
    preprocessed = checkout / "results" / "preprocessed" / "LA"
    kept = {p: p.stat().st_mtime_ns for p in preprocessed.rglob("*")}
    try:
        raw.write_bytes(content[:200])  # truncated
        failed = run_snakemake(checkout, "results/preprocessed/LA", "--cores", "1", *FAST_DEMO)
        assert failed.returncode != 0
        assert failed.stderr.count(f"unreadable or truncated image file {raw.relative_to(checkout)}") == 1
        assert "ERROR in rule check_inputs (dataset=LA" in failed.stderr
        assert {p: p.stat().st_mtime_ns for p in preprocessed.rglob("*")} == kept  # untouched
    finally:
        raw.write_bytes(content)
        os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = run_snakemake(checkout, "all", "-n", "--cores", "2", *FAST_DEMO)
    assert "Nothing to be done" in again.stdout + again.stderr  # restored input: nothing reruns
