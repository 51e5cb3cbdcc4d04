"""Aggregation: run scores, paper-layout tables (blocks, columns, delta, best marks, flags), per-class,
ablation and significance tables, figures, provenance and the results summary, on small fixtures."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ssnet.datasets import get_dataset
from ssnet.engine import run_info
from ssnet.errors import DataError
from ssnet.evaluation.evaluate import qualitative_slice, write_qualitative
from ssnet.report.aggregate import aggregate, labelled_figures, result_tables
from ssnet.report.predictions import read_qualitative
from ssnet.report.provenance import provenance, summary
from ssnet.report.render import to_latex, to_markdown
from ssnet.report.significance import per_case_dice, significance
from ssnet.report.tables import ablation_table, load_cases, load_runs, main_table, per_class_table, summarise
from ssnet.report.targets import per_class_constraint, per_class_datasets

LABELS = {"supervised": "V-Net", "ssnet": "SS-Net", "uamt": "UA-MT", "ssnet_no_smooth": "SS-Net w/o smoothness",
          "ssnet_no_both": "SS-Net w/o both"}
TYPES = {"supervised": "supervised", "uamt": "uamt", "ssnet": "ssnet", "ssnet_no_smooth": "ssnet", "ssnet_no_both": "ssnet"}
FLAGS = {"ssnet": (True, True), "ssnet_no_smooth": (False, True), "ssnet_no_both": (False, False)}
ORDER = ["supervised", "uamt", "ssnet", "ssnet_no_smooth", "ssnet_no_both"]


def _write_run(root, method, labelled, seed, dice_values, selection="last", test_set=False, scans=(2, 6),
               dataset="LA", classes=(1,), profile="reference"):
    run = root / dataset / method / labelled / f"seed{seed}"
    run.mkdir(parents=True)
    rows = [{"dataset": dataset, "method": method, "labelled": labelled, "seed": seed, "case": f"c{i}", "class": c,
             "dice": d, "jaccard": d / 2, "hd95": 10 * (1 - d), "asd": 1 - d, "empty_prediction": d == 0,
             "empty_ground_truth": False} for i, d in enumerate(dice_values) for c in classes]
    pd.DataFrame(rows).to_csv(run / "test_metrics.csv", index=False)
    smooth, sep = FLAGS.get(method, (False, False))
    params = {"smoothness": smooth, "separation": sep} if TYPES.get(method) == "ssnet" else {"ce_weight": 0.5}
    info = run_info.RunInfo(
        dataset=dataset, method=method, method_type=TYPES.get(method, method), labelled=labelled, seed=seed,
        config_hash=f"h{seed}", git_commit="abc123", versions={"torch": "2.0", "numpy": "1.0"}, device="cpu",
        selection=selection, test_set_selection=test_set, selected_iteration=None, best_val_dice=None,
        n_labelled=scans[0], n_labelled_scans=scans[0], n_unlabelled=scans[1], n_unlabelled_scans=scans[1],
        n_validation=0, labelled_items=[], validation_items=[], train_seconds=None, resumed_from_iteration=0,
        run_config={"method_label": LABELS.get(method, method.upper()), "method_type": TYPES.get(method, method),
                    "params": params, "schedule_profile": profile})
    run_info.write(run / "run_info.json", info)
    return run / "test_metrics.csv", run / "run_info.json"


def _files(items):
    return [f[0] for f in items], [f[1] for f in items]


@pytest.fixture
def runs(tmp_path):
    return _files([
        _write_run(tmp_path, "supervised", "2", 1, [0.5, 0.7], scans=(2, 0)),  # run mean 0.6
        _write_run(tmp_path, "supervised", "2", 2, [0.8, 0.8], scans=(2, 0)),  # run mean 0.8
        _write_run(tmp_path, "supervised", "all", 1, [0.9, 0.9], scans=(8, 0)),
        _write_run(tmp_path, "ssnet", "2", 1, [0.0, 0.9]),
    ])


@pytest.fixture
def paper(tmp_path):
    path = tmp_path / "paper.csv"
    pd.DataFrame([
        {"dataset": "LA", "method": "V-Net", "labeled": 2, "ratio": 0.05, "dice": 60.0, "jaccard": 30.0, "hd95": 4.0,
         "asd": 0.5, "source": "test"},
        {"dataset": "LA", "method": "V-Net", "labeled": 80, "ratio": 1.0, "dice": 91.0, "jaccard": 84.0, "hd95": 5.0,
         "asd": 1.5, "source": "test"},
        {"dataset": "LA", "method": "SS-Net", "labeled": 2, "ratio": 0.05, "dice": 50.0, "jaccard": 25.0, "hd95": 5.0,
         "asd": 0.5, "source": "test"},
    ]).to_csv(path, index=False)
    return pd.read_csv(path)


def test_mean_and_std_over_seeds(runs):
    table = summarise(load_runs(*runs), ["supervised", "ssnet"])
    row = table[(table["method"] == "supervised") & (table["labelled"] == "2")].iloc[0]
    assert row["dice_mean"] == pytest.approx(70.0)
    assert row["dice_std"] == pytest.approx(np.std([60.0, 80.0], ddof=1))
    assert row["n_seeds"] == 2
    assert row["hd95_mean"] == pytest.approx(10 * (1 - 0.7))


def test_main_table_blocks_columns_delta_and_best(runs, paper):
    frame, table = main_table(load_runs(*runs), ["supervised", "ssnet"], "LA", paper, "reference", "raw")
    # blocks: one per labelled count, full supervision last; rows in method order
    assert [b.title for b in table.blocks] == ["2 labelled scans (25%)", "Full supervision (8 labelled scans)"]
    assert [[row[0].text for row in b.rows] for b in table.blocks] == [["V-Net", "SS-Net"], ["V-Net (full supervision)"]]
    assert list(zip(frame["method"], frame["labelled"])) == [("supervised", "2"), ("ssnet", "2"), ("supervised", "all")]
    # columns: method, scans used L/U, n, then ours | paper | delta per metric
    assert table.columns[:4] == [("", "Method"), ("Scans used", "L"), ("Scans used", "U"), ("", "n")]
    assert table.columns[4:7] == [("Dice (%)", "ours"), ("Dice (%)", "paper"), ("Dice (%)", "Δ")]
    assert [name for group, name in table.columns if group == "95HD (voxel)"] == ["ours", "paper", "Δ"]
    vnet, ssnet = table.blocks[0].rows
    assert [c.text for c in vnet[1:7]] == ["2", "0", "2", "70.00 ± 14.14", "60.00", "+10.00"]
    assert [c.text for c in ssnet[1:7]] == ["2", "6", "1", "45.00", "50.00", "-5.00"]  # one seed: no std
    assert frame.loc[0, "dice_delta"] == pytest.approx(10.0) and frame.loc[1, "dice_paper"] == 50.0
    # full supervision matched to the paper's 80-scan row
    full = frame[frame["labelled"] == "all"].iloc[0]
    assert full["dice_paper"] == 91.0 and full["dice_delta"] == pytest.approx(90.0 - 91.0)
    # best per column and block: V-Net has the higher Dice, SS-Net the lower... HD95 (4.5 vs 3.0): V-Net
    assert vnet[4].bold and not ssnet[4].bold
    assert frame.loc[0, "dice_best"] and not frame.loc[1, "dice_best"]
    assert not frame.loc[2, "dice_best"]  # a one-row block has no "best"
    assert frame.loc[0, "hd95_best"] == (frame.loc[0, "hd95_mean"] <= frame.loc[1, "hd95_mean"])
    markdown, latex = to_markdown(table), to_latex(table)
    assert "**70.00 ± 14.14**" in markdown and "| *2 labelled scans (25%)* |" in markdown
    assert "Dice (%) ours | Dice (%) paper | Dice (%) Δ" in markdown
    assert "\\textbf{70.00 $\\pm$ 14.14}" in latex and "\\cmidrule(lr){2-3}" in latex
    assert "\\multicolumn{3}{c}{Dice (\\%)}" in latex and "$\\Delta$" in latex
    assert all(k in latex for k in ("\\toprule", "\\midrule", "\\bottomrule"))
    notes = " ".join(table.notes)
    assert "Model selection: last = last iteration" in notes and "Schedule profile: reference" in notes
    assert "WARNING" not in notes and "synthetic" not in notes


def test_leakage_and_synthetic_flags(tmp_path, runs, paper):
    extra = _write_run(tmp_path / "leaky", "ssnet", "4", 1, [0.5], selection="best_test", test_set=True, scans=(4, 4))
    metric_files, info_files = runs
    all_runs = load_runs(metric_files + [extra[0]], info_files + [extra[1]])
    _, table = main_table(all_runs, ["supervised", "ssnet"], "LA", paper, "uniform", "synthetic")
    leaky_block = [b for b in table.blocks if b.title.startswith("4 labelled")][0]
    assert leaky_block.rows[0][0].text == "SS-Net †"
    notes = " ".join(table.notes)
    assert "WARNING: test-set selection (best_test) used for SS-Net" in notes
    assert "best_test = best test Dice (TEST-SET SELECTION" in notes
    assert "synthetic demo volumes" in notes


def test_ablation_variants_leave_the_main_table(tmp_path, paper):
    files = _files([_write_run(tmp_path, m, "2", s, d) for m, s, d in [
        ("ssnet", 1, [0.8, 0.9]), ("ssnet", 2, [0.7, 0.9]), ("ssnet_no_smooth", 1, [0.6, 0.7]),
        ("ssnet_no_both", 1, [0.5, 0.6]), ("supervised", 1, [0.4, 0.5])]])
    runs = load_runs(*files)
    frame, _ = main_table(runs, ORDER, "LA", paper)
    assert list(frame["method"]) == ["supervised", "ssnet"]
    ablation, table = ablation_table(runs, ORDER, "LA")
    assert list(ablation["method"]) == ["ssnet_no_both", "ssnet_no_smooth", "ssnet"]  # (off,off), (off,on), (on,on)
    assert [[c.text for c in row[3:6]] for row in table.blocks[0].rows] == [["✗", "✗", "1"], ["✗", "✓", "1"],
                                                                            ["✓", "✓", "2"]]
    assert table.blocks[0].rows[2][6].bold  # full SS-Net has the best Dice
    assert "L_smooth" in to_markdown(table) and "\\checkmark" in to_latex(table)


def test_ablation_without_ssnet_runs_is_an_explained_empty_table(runs):
    frame, table = ablation_table(load_runs(*runs).query("method != 'ssnet'"), ["supervised"], "LA")
    assert frame.empty and "No SS-Net runs" in table.notes[0] and "(no rows)" in to_markdown(table)


def test_acdc_per_class_table(tmp_path):
    files = _files([
        _write_run(tmp_path, "supervised", "3", 1, [0.5, 0.7], dataset="ACDC", classes=(1, 2, 3), scans=(3, 0)),
        _write_run(tmp_path, "ssnet", "3", 1, [0.6, 0.9], dataset="ACDC", classes=(1, 2, 3), scans=(3, 67)),
    ])
    frame, table = per_class_table(load_cases(*files), ["supervised", "ssnet"], "ACDC")
    assert list(frame["class_name"]) == ["RV", "Myo", "LV"] * 2
    assert [g for g, _ in table.groups()][-3:] == ["RV", "Myo", "LV"]
    assert [c.text for c in table.blocks[0].rows[1][4:6]] == ["75.00", "2.50"]
    assert table.blocks[0].rows[1][4].bold and not table.blocks[0].rows[0][4].bold


def test_per_class_table_only_for_datasets_with_several_classes():
    assert per_class_datasets(["LA", "ACDC"]) == ["ACDC"] and per_class_constraint(["LA", "ACDC"]) == "ACDC"
    assert not re.fullmatch(per_class_constraint(["LA"]), "LA")  # the rule matches no dataset


def test_run_record_round_trip_and_incomplete_record(tmp_path, runs):
    _, info_files = runs
    info = run_info.read(info_files[0])
    assert (info.labelled, info.method_label, info.schedule_profile, info.is_released) == ("2", "V-Net", "reference",
                                                                                          False)
    assert "released_checkpoint" not in json.loads(info_files[0].read_text())  # unset optional keys are left out
    (tmp_path / "bad.json").write_text(json.dumps({"dataset": "LA", "seed": 1}))
    with pytest.raises(DataError, match="bad.json lacks method, method_type"):
        run_info.read(tmp_path / "bad.json")


def test_significance_matches_scipy(tmp_path):
    sup = {1: [0.60, 0.70, 0.55, 0.80, 0.65, 0.72, 0.58], 2: [0.62, 0.66, 0.57, 0.78, 0.70, 0.74, 0.50]}
    ssn = {1: [0.70, 0.71, 0.65, 0.83, 0.64, 0.80, 0.69], 2: [0.68, 0.75, 0.61, 0.85, 0.69, 0.79, 0.66]}
    files = _files([_write_run(tmp_path, "supervised", "2", s, d, dataset="ACDC", classes=(1, 2, 3)) for s, d in sup.items()]
                   + [_write_run(tmp_path, "ssnet", "2", s, d, dataset="ACDC", classes=(1, 2, 3)) for s, d in ssn.items()])
    cases = load_cases(*files)
    frame = significance(cases, ["supervised", "ssnet"], "ACDC")
    x = 100 * (np.array(sup[1]) + np.array(sup[2])) / 2  # per-case Dice averaged over seeds (classes equal here)
    y = 100 * (np.array(ssn[1]) + np.array(ssn[2])) / 2
    expected = stats.wilcoxon(x, y)
    row = frame.iloc[0]
    assert (row["method"], row["reference"], row["n_cases"], row["n_seeds"]) == ("supervised", "ssnet", 7, 2)
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["mean_difference"] == pytest.approx(np.mean(x - y))
    assert row["significant"] == (expected.pvalue < 0.05)


def test_per_case_dice_averages_classes_then_seeds(tmp_path):
    run = _write_run(tmp_path, "ssnet", "2", 1, [0.5], dataset="ACDC", classes=(1, 2, 3))
    metrics = pd.read_csv(run[0])
    metrics["dice"] = [0.3, 0.6, 0.9]
    metrics.to_csv(run[0], index=False)
    run2 = _write_run(tmp_path, "ssnet", "2", 2, [0.2], dataset="ACDC", classes=(1, 2, 3))
    dice = per_case_dice(load_cases(*_files([run, run2])))
    assert dice["dice"].iloc[0] == pytest.approx((60.0 + 20.0) / 2) and dice["n_seeds"].iloc[0] == 2


def test_significance_without_reference_or_with_identical_cases(tmp_path):
    files = _files([_write_run(tmp_path, "supervised", "2", 1, [0.5, 0.6]), _write_run(tmp_path, "ssnet", "2", 1, [0.5, 0.6])])
    cases = load_cases(*files)
    assert significance(cases[cases["method"] == "supervised"], ["supervised"], "LA").empty
    row = significance(cases, ["supervised", "ssnet"], "LA").iloc[0]
    assert np.isnan(row["p_value"]) and row["comment"] == "identical per-case Dice"


def _outputs(root, prefix, names):
    return {f"{prefix}{ext}": str(root / f"{names}.{ext}") for ext in ("csv", "md", "tex", "html")}


def test_aggregate_and_result_tables_write_every_format(tmp_path, runs, paper):
    metric_files, info_files = runs
    paper_csv = tmp_path / "paper.csv"
    out = tmp_path / "out"
    outputs = {**_outputs(out, "table_", "main"), "runs_csv": str(out / "r.csv"), "figure_png": str(out / "f.png"),
               "figure_pdf": str(out / "f.pdf")}
    aggregate("LA", metric_files, info_files, ["supervised", "ssnet"], "reference", outputs, str(paper_csv), "raw")
    html = (out / "main.html").read_text()
    assert "<b>70.00 ± 14.14</b>" in html and 'colspan="3" class="group">Dice (%)' in html
    assert (out / "f.png").read_bytes()[:4] == b"\x89PNG" and (out / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert len(pd.read_csv(out / "r.csv")) == 4
    assert list(pd.read_csv(out / "main.csv", dtype={"labelled": str})["labelled"]) == ["2", "2", "all"]
    tables = {**_outputs(out, "ablation_", "abl"), **_outputs(out, "significance_", "sig")}
    result_tables("LA", metric_files, info_files, ["supervised", "ssnet"], "reference", tables, "raw")
    assert "Wilcoxon" in (out / "sig.md").read_text() and "\\toprule" in (out / "abl.tex").read_text()
    sig = pd.read_csv(out / "sig.csv")
    assert list(sig["method"]) == ["supervised"] and sig["n_cases"].iloc[0] == 2


def test_qualitative_slice_is_the_largest_ground_truth_slice(tmp_path):
    label = np.zeros((4, 5, 6), np.uint8)
    label[1:3, 1:4, 2] = 1
    label[1, 1, 4] = 1
    image = np.random.default_rng(0).random(label.shape).astype(np.float32)
    la, acdc = get_dataset("LA"), get_dataset("ACDC")
    index, img, lab, pred = qualitative_slice(image, label, label, la.qualitative_axis)  # LA: (X, Y, Z), along Z
    assert index == 2 and img.shape == (4, 5) and lab.sum() == 6
    index, *_ = qualitative_slice(image, label, label, acdc.qualitative_axis)  # ACDC: (Z, H, W)
    assert index == 1
    write_qualitative(tmp_path / "p.npz", [("case0", index, img, lab, pred)])
    read = read_qualitative(tmp_path / "p.npz")
    assert read[0]["case"] == "case0" and np.array_equal(read[0]["prediction"], pred)


def test_labelled_figures(tmp_path, runs):
    metric_files, info_files = runs
    rng = np.random.default_rng(0)
    preds = []
    for info in info_files:
        run = info.parent
        pd.DataFrame({"iteration": range(1, 21), "lr": 0.01, "loss": rng.random(20), "loss_dice": rng.random(20)}).to_csv(
            run / "train_log.csv", index=False)
        pd.DataFrame({"iteration": [10, 20], "val_dice": [0.3, 0.5]}).to_csv(run / "val_log.csv", index=False)
        label = np.zeros((16, 16), np.uint8)
        label[4:10, 5:12] = 1
        write_qualitative(run / "predictions.npz", [("c0", 3, rng.random((16, 16)).astype(np.float32), label, label)])
        preds.append(run / "predictions.npz")
    files = {"metrics": metric_files, "info": info_files, "train_log": [i.parent / "train_log.csv" for i in info_files],
             "val_log": [i.parent / "val_log.csv" for i in info_files], "predictions": preds}
    out = {f"{kind}_{ext}": str(tmp_path / "fig" / f"{kind}.{ext}") for kind in ("curves", "distribution", "qualitative")
           for ext in ("png", "pdf")}
    labelled_figures("LA", "2", files, ["supervised", "ssnet"], out)
    for path in out.values():
        assert (tmp_path / "fig" / path.split("/")[-1]).stat().st_size > 1000


def test_provenance_and_summary(tmp_path, runs, paper):
    metric_files, info_files = runs
    out = {"csv": str(tmp_path / "repro.csv"), "config_yaml": str(tmp_path / "c.yaml"), "html": str(tmp_path / "p.html")}
    provenance(info_files, {"seeds": [1, 2], "datasets": {"LA": {"source": "raw"}}}, out)
    repro = pd.read_csv(out["csv"])
    assert list(repro.columns[:7]) == ["dataset", "method", "label", "labelled", "seed", "git_commit", "config_hash"]
    assert {"version_torch", "version_numpy"} <= set(repro.columns) and len(repro) == 4
    assert "seeds:" in (tmp_path / "c.yaml").read_text() and "Resolved configuration" in (tmp_path / "p.html").read_text()
    frame, _ = main_table(load_runs(*runs), ["supervised", "ssnet"], "LA", paper)
    frame.to_csv(tmp_path / "main.csv", index=False)
    summary([tmp_path / "main.csv"], {"LA": "synthetic"}, tmp_path / "summary.md")
    text = (tmp_path / "summary.md").read_text()
    assert "## LA" in text and "Synthetic demo data" in text and "| 2 | V-Net | 2 | 70.00 ± 14.14 | 60.00 | +10.00 |" in text
