"""The Snakemake workflow as a user runs it, in a fresh copy of the project's tracked files."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PROJECT_FILES = [
    "Snakefile", "config.yaml", "configs", "rules", "scripts", "envs", "ssnet", "resources", "profiles", "tests/data"
]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A clean copy of the workflow (no results, no .snakemake)."""
    root = tmp_path_factory.mktemp("checkout")
    for name in PROJECT_FILES:
        source, target = ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return root


def _snakemake(checkout, *args, timeout=900):
    return subprocess.run([*SNAKEMAKE, *args], cwd=checkout, capture_output=True, text=True, timeout=timeout)


def test_missing_real_data_stops_with_a_clear_message(checkout):
    result = _snakemake(checkout, "-n", "--cores", "8", "all")
    assert result.returncode != 0
    assert "datasets.LA.raw_dir = 'data/LA' is not a folder" in result.stderr
    assert "datasets.ACDC.raw_dir" in result.stderr and "Training Set" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_config_key_stops_naming_the_key(checkout, tmp_path):
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("datasets: {LA: {training: {iteratoins: 5}}}\n")
    result = _snakemake(checkout, "all", "-n", "--cores", "1", "--configfile", "configs/demo.yaml", str(overlay))
    assert result.returncode != 0
    assert "datasets.LA.training.iteratoins" in result.stderr and "Traceback" not in result.stderr


def test_demo_dag_end_to_end(checkout):
    result = _snakemake(checkout, "all", "--cores", "2", "--configfile", "configs/demo.yaml",
                        "tests/data/fast_demo.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    for dataset, n_runs in (("LA", 6), ("ACDC", 6)):
        table = pd.read_csv(checkout / "results" / "tables" / dataset / "main_table.csv")
        assert list(table["labelled"]) == ["1", "3", "all"] if dataset == "ACDC" else ["2", "4", "all"]
        assert (table["n_seeds"] == 2).all()
        runs = pd.read_csv(checkout / "results" / "tables" / dataset / "runs.csv")
        assert len(runs) == n_runs and runs["dice"].between(0, 100).all()
        markdown = (checkout / "results" / "tables" / dataset / "main_table.md").read_text()
        assert "Dice (%)" in markdown and "best_val" in markdown
        assert "\\toprule" in (checkout / "results" / "tables" / dataset / "main_table.tex").read_text()
        for ext in ("png", "pdf"):
            assert (checkout / "results" / "figures" / dataset / f"dice_vs_labelled.{ext}").stat().st_size > 1000
        assert any((checkout / "results" / "benchmarks" / "train" / dataset).rglob("*.tsv"))
    # nothing left to do: a second invocation is a no-op
    again = _snakemake(checkout, "all", "-n", "--cores", "2", "--configfile", "configs/demo.yaml",
                       "tests/data/fast_demo.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
