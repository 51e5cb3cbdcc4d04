"""Aggregation: run scores, mean +- std over seeds, table layout, flags and the figure."""

import json

import numpy as np
import pandas as pd
import pytest

from ssnet.report.aggregate import aggregate
from ssnet.report.tables import display_rows, load_runs, summarise


def _write_run(root, method, labelled, seed, dice_values, selection="last", test_set=False, scans=(2, 6)):
    run = root / method / labelled / f"seed{seed}"
    run.mkdir(parents=True)
    rows = [{"dataset": "LA", "method": method, "labelled": labelled, "seed": seed, "case": f"c{i}", "class": 1,
             "dice": d, "jaccard": d / 2, "hd95": 10 * (1 - d), "asd": 1 - d, "empty_prediction": d == 0,
             "empty_ground_truth": False} for i, d in enumerate(dice_values)]
    pd.DataFrame(rows).to_csv(run / "test_metrics.csv", index=False)
    info = {"dataset": "LA", "method": method, "labelled": labelled, "seed": seed, "selection": selection,
            "test_set_selection": test_set, "n_labelled_scans": scans[0], "n_unlabelled_scans": scans[1],
            "run_config": {"method_label": method.upper()}}
    (run / "run_info.json").write_text(json.dumps(info))
    return run / "test_metrics.csv", run / "run_info.json"


@pytest.fixture
def runs(tmp_path):
    files = [
        _write_run(tmp_path, "supervised", "2", 1, [0.5, 0.7]),  # run mean 0.6
        _write_run(tmp_path, "supervised", "2", 2, [0.8, 0.8]),  # run mean 0.8
        _write_run(tmp_path, "supervised", "all", 1, [0.9, 0.9], scans=(8, 0)),
        _write_run(tmp_path, "ssnet", "2", 1, [0.0, 0.9]),
    ]
    return [f[0] for f in files], [f[1] for f in files]


def test_mean_and_std_over_seeds(runs):
    table = summarise(load_runs(*runs), ["supervised", "ssnet"])
    row = table[(table["method"] == "supervised") & (table["labelled"] == "2")].iloc[0]
    assert row["dice_mean"] == pytest.approx(70.0)
    assert row["dice_std"] == pytest.approx(np.std([60.0, 80.0], ddof=1))
    assert row["n_seeds"] == 2
    assert row["hd95_mean"] == pytest.approx(10 * (1 - 0.7))


def test_block_order_and_display(runs):
    table = summarise(load_runs(*runs), ["supervised", "ssnet"])
    assert list(zip(table["method"], table["labelled"])) == [("supervised", "2"), ("ssnet", "2"), ("supervised", "all")]
    rows = display_rows(table)
    assert rows[0]["Scans used (L/U)"] == "2 / 6"
    assert rows[0]["Dice (%)"] == "70.00 ± 14.14"
    assert rows[1]["Dice (%)"] == "45.00" and rows[1]["Empty pred."] == 1  # one seed: no std
    assert rows[2]["Method"] == "SUPERVISED (full supervision)"


def test_outputs_and_leakage_flag(tmp_path, runs):
    metric_files, info_files = runs
    extra = _write_run(tmp_path / "leaky", "ssnet", "4", 1, [0.5], selection="best_test", test_set=True)
    outputs = {k: str(tmp_path / "out" / name) for k, name in [
        ("table_csv", "t.csv"), ("table_md", "t.md"), ("table_tex", "t.tex"), ("runs_csv", "r.csv"),
        ("figure_png", "f.png"), ("figure_pdf", "f.pdf")]}
    aggregate("LA", metric_files + [extra[0]], info_files + [extra[1]], ["supervised", "ssnet"], "reference", outputs)
    markdown = (tmp_path / "out" / "t.md").read_text()
    assert "test-set selection (best_test)" in markdown and "Schedule profile: reference" in markdown
    latex = (tmp_path / "out" / "t.tex").read_text()
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex and "$\\pm$" in latex
    assert (tmp_path / "out" / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert len(pd.read_csv(tmp_path / "out" / "r.csv")) == 5
