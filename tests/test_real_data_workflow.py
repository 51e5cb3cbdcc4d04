"""`snakemake all` with the config pointed at folders laid out like the real releases.

Both input kinds are exercised (LA raw + ACDC preprocessed in one run, LA preprocessed + ACDC raw in
the other), with the official split lists unchanged, a tiny network and a few iterations, and the
released-checkpoint branch (reference-keyed state dicts imported instead of trained).
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, copy_project
from ssnet.data.fixtures import make_layout
from ssnet.data.provenance import read_manifest
from ssnet.io import read_list, sha256_file

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
OFFICIAL = ROOT / "resources" / "splits"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("releases")
    for dataset in ("LA", "ACDC"):
        for kind in ("raw", "preprocessed"):
            make_layout(dataset, kind, root / dataset / kind, seed=1)
    return root


def _checkout(root: Path) -> Path:
    return copy_project(root, "tests/golden")


def _overlay(layouts: Path, la_kind: str, acdc_kind: str) -> dict:
    return {
        "seeds": [1],
        "device": "cpu",
        "schedule_profile": "uniform",  # the tiny schedule below over a method's own (e.g. 6,000 iterations)
        "datasets": {
            "LA": {
                "source": la_kind, "raw_dir": str(layouts / "LA" / la_kind),
                "network": {"arch": "vnet", "n_filters": 2, "dropout": True},
                "labelled": [4], "full_supervision": False, "methods": ["supervised"],
                "training": {"iterations": 4, "batch_labelled": 2, "batch_unlabelled": 2, "batch_labelled_only": 2,
                             "patch_size": [16, 16, 16], "lr_step": 2, "checkpoint_every": 2, "log_every": 2,
                             "num_workers": 0},
                "selection": {"mode": "best_val", "val_every": 2, "val_start": 2, "validation_cases": 2},
                "inference": {"patch_size": [32, 32, 32], "stride_xy": 16, "stride_z": 32, "batch_size": 4},
                "released_checkpoints": [{"labelled": 8, "path": "tests/golden/vnet_small_state.pt"}],
            },
            "ACDC": {
                "source": acdc_kind, "raw_dir": str(layouts / "ACDC" / acdc_kind),
                "network": {"arch": "unet", "channels": [2, 4, 8, 16, 32]},
                "labelled": [3], "full_supervision": False, "methods": ["supervised"],
                "training": {"iterations": 4, "batch_labelled": 2, "batch_unlabelled": 2, "batch_labelled_only": 2,
                             "patch_size": [32, 32], "checkpoint_every": 2, "log_every": 2, "num_workers": 0},
                "selection": {"mode": "best_val", "val_every": 2, "val_start": 2},
                "inference": {"patch_size": [32, 32], "batch_size": 16},
                "released_checkpoints": [{"labelled": 7, "path": "tests/golden/unet_state.pt"}],
            },
        },
    }


@pytest.mark.parametrize("la_kind,acdc_kind", [("raw", "preprocessed"), ("preprocessed", "raw")])
def test_snakemake_all_on_real_layouts(layouts, tmp_path, la_kind, acdc_kind):
    checkout = _checkout(tmp_path / "checkout")
    overlay = tmp_path / "real.yaml"
    overlay.write_text(yaml.safe_dump(_overlay(layouts, la_kind, acdc_kind)))
    result = subprocess.run([*SNAKEMAKE, "all", "--cores", "2", "--configfile", str(overlay)], cwd=checkout,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    pre = checkout / "results" / "preprocessed"
    # the official lists, unchanged, and every listed case imported
    for dataset in ("LA", "ACDC"):
        for name in ("train", "test") + (("val", "train_slices") if dataset == "ACDC" else ()):
            official = read_list(OFFICIAL / dataset / f"{name}.list")
            assert read_list(pre / dataset / "splits" / f"{name}.list") == official
        summary = json.loads((pre / dataset / "preprocess.json").read_text())
        assert summary["source"] == {"LA": la_kind, "ACDC": acdc_kind}[dataset]
        assert summary["warnings"] == []
        rows = read_manifest(pre / dataset / "manifest.csv")
        for row in rows[:5]:
            assert sha256_file(row["input"]) == row["sha256"]
            assert all((pre / dataset / out).is_file() for out in row["outputs"])
    assert len(list((pre / "LA" / "cases").glob("*.h5"))) == 100
    assert len(list((pre / "ACDC" / "slices").glob("*.h5"))) == 1312
    assert len(list((pre / "ACDC" / "volumes").glob("*.h5"))) == 200
    # training used the official labelled subsets (LA first 4 of train.list; ACDC first 3 patients = 68 slices)
    la_info = json.loads((checkout / "results/runs/LA/supervised/4/seed1/run_info.json").read_text())
    la_train = read_list(OFFICIAL / "LA" / "train.list")
    assert la_info["labelled_items"] == la_train[:4] and la_info["validation_items"] == la_train[-2:]
    acdc_info = json.loads((checkout / "results/runs/ACDC/supervised/3/seed1/run_info.json").read_text())
    assert acdc_info["labelled_items"] == read_list(OFFICIAL / "ACDC" / "train_slices.list")[:68]
    assert acdc_info["n_labelled_scans"] == 3
    # every test case evaluated, for the trained run and for the released checkpoint
    for dataset, labelled, n_test in (("LA", "8", 20), ("ACDC", "7", 40)):
        run = checkout / "results" / "runs" / dataset / "released" / labelled / "seed0"
        assert pd.read_csv(run / "test_metrics.csv")["case"].nunique() == n_test
        released = json.loads((run / "run_info.json").read_text())
        assert released["test_set_selection"] == (dataset == "LA")
        runs = pd.read_csv(checkout / "results" / "tables" / dataset / "runs.csv")
        assert set(runs["method"]) == {"supervised", "released"}
        assert "released checkpoint" in (checkout / "results" / "tables" / dataset / "main_table.md").read_text()


def test_missing_preprocessed_release_names_the_expected_layout(tmp_path):
    checkout = _checkout(tmp_path / "checkout")
    overlay = tmp_path / "pre.yaml"
    overlay.write_text(yaml.safe_dump({"datasets": {"LA": {"source": "preprocessed", "raw_dir": "data/LA_h5"},
                                                    "ACDC": {"source": "preprocessed", "raw_dir": "data/ACDC_h5"}}}))
    result = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "all", "--configfile", str(overlay)], cwd=checkout,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "datasets.LA.raw_dir = 'data/LA_h5' is not a folder" in result.stderr
    assert "2018LA_Seg_Training Set/<case ID>/mri_norm2.h5" in result.stderr
    assert "data/slices/" in result.stderr


def test_released_name_is_reserved(tmp_path):
    checkout = _checkout(tmp_path / "checkout")
    overlay = tmp_path / "reserved.yaml"
    overlay.write_text(yaml.safe_dump({"methods": {"released": {"type": "supervised"}}}))
    result = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "all", "--configfile", "configs/demo.yaml",
                             str(overlay)], cwd=checkout, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "'released' is reserved" in result.stderr
