"""The Snakemake workflow as a user runs it, in a fresh copy of the project's tracked files."""

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
