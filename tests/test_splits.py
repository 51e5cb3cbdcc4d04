"""Split lists and labelled subsets against the official lists (protocol section 3)."""

import subprocess
import sys
from pathlib import Path

import pytest

from ssnet.data.splits import check_disjoint, labelled_cases_la, labelled_slices_acdc, patients_of, ratio_to_count
from ssnet.datasets import get_dataset
from ssnet.errors import DataError

LA, ACDC = get_dataset("LA"), get_dataset("ACDC")

OFFICIAL = Path(__file__).resolve().parents[1] / "resources" / "splits"


def test_official_la():
    s = LA.read_splits(OFFICIAL / "LA")
    assert len(s["train"]) == 80 and len(s["test"]) == 20
    assert s["train"] == sorted(s["train"])
    check_disjoint(s)
    assert labelled_cases_la(s["train"], 8) == s["train"][:8]
    with pytest.raises(ValueError):
        labelled_cases_la(s["train"], 81)


def test_official_acdc_labelled_slices():
    s = ACDC.read_splits(OFFICIAL / "ACDC")
    assert (len(s["train"]), len(s["val"]), len(s["test"]), len(s["train_slices"])) == (140, 20, 40, 1312)
    check_disjoint(s)
    expected = {3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}
    for n, count in expected.items():
        got = labelled_slices_acdc(s["train_slices"], s["train"], n)
        assert len(got) == count
        assert got == s["train_slices"][:count]  # a prefix: train_slices is in train.list patient order
    assert len(patients_of(s["train"])) == 70
    assert patients_of(s["train"])[:2] == ["patient099", "patient038"]


def test_parse_time_dataset_queries_stay_light():
    """The workflow asks the datasets for split lists, scan counts and synthetic split sizes while it is
    parsed: none of that may import torch, h5py, SimpleITK, pandas or scipy."""
    code = ("import sys; from ssnet.config.params import defaults; from ssnet.datasets import DATASETS\n"
            "for d in DATASETS.values():\n"
            f"    d.scan_count(d.read_splits({str(OFFICIAL)!r} + '/' + d.name)['train'])\n"
            "    d.synthetic_split_sizes(defaults(d.synthetic_params))\n"
            "print(sorted({'torch', 'h5py', 'SimpleITK', 'pandas', 'scipy'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=OFFICIAL.parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_ratio_to_count():
    assert ratio_to_count(0.05, 80) == 4 and ratio_to_count(0.1, 80) == 8
    assert ratio_to_count(0.01, 10) == 1 and ratio_to_count(1.0, 7) == 7
    with pytest.raises(ValueError):
        ratio_to_count(0, 10)


def test_overlap_detected():
    with pytest.raises(DataError, match="AAA"):
        check_disjoint({"train": ["AAA", "BBB"], "test": ["AAA"]})
    with pytest.raises(DataError, match="patient001"):
        check_disjoint({"train": ["patient001_frame01"], "val": ["patient001_frame02"]})
    with pytest.raises(DataError, match="duplicate"):
        check_disjoint({"train": ["A", "A"]})


def test_missing_list(tmp_path):
    (tmp_path / "train.list").write_text("A\n")
    with pytest.raises(DataError, match="test.list"):
        LA.read_splits(tmp_path)


# --------------------------------------------------------------------------- official lists in training_split
def _official_root(tmp_path, dataset):
    import shutil

    shutil.copytree(OFFICIAL / dataset, tmp_path / dataset / "splits")
    return tmp_path / dataset


@pytest.mark.parametrize("labelled", [4, 8])
@pytest.mark.parametrize("n_val", [0, 8, 16])
def test_la_official_labelled_and_leakage_free_validation(tmp_path, labelled, n_val):
    from ssnet.data.loading import training_split

    root = _official_root(tmp_path, "LA")
    train = LA.read_splits(OFFICIAL / "LA")["train"]
    test = LA.read_splits(OFFICIAL / "LA")["test"]
    mode = "best_val" if n_val else "last"
    split = training_split(root, LA, str(labelled), {"mode": mode, "validation_cases": n_val})
    assert split.labelled == train[:labelled]  # the first N of train.list, as the reference
    assert split.validation == (train[80 - n_val:] if n_val else [])
    assert not set(split.validation) & set(split.labelled)  # validation never labelled
    assert not set(split.validation) & set(split.unlabelled)  # nor in the unlabelled pool
    assert not set(split.validation) & set(test) and not split.validation_is_test
    assert sorted(split.labelled + split.unlabelled + split.validation) == sorted(train)
    assert len(split.unlabelled) == 80 - labelled - n_val


def test_la_best_test_is_flagged(tmp_path):
    from ssnet.data.loading import training_split

    root = _official_root(tmp_path, "LA")
    split = training_split(root, LA, "8", {"mode": "best_test", "validation_cases": 0})
    assert split.validation_is_test and split.validation == LA.read_splits(OFFICIAL / "LA")["test"]


@pytest.mark.parametrize("patients,slices", [(3, 68), (7, 136), ("all", 1312)])
def test_acdc_official_training_split(tmp_path, patients, slices):
    from ssnet.data.loading import training_split

    root = _official_root(tmp_path, "ACDC")
    s = ACDC.read_splits(OFFICIAL / "ACDC")
    split = training_split(root, ACDC, str(patients), {"mode": "best_val", "validation_cases": 0})
    assert split.labelled == s["train_slices"][:slices]
    assert split.validation == s["val"] and not split.validation_is_test
    assert len(split.unlabelled) == 1312 - slices
    assert split.labelled_scans == (70 if patients == "all" else patients)


# --------------------------------------------------------------------------- normalised entries
def test_split_entries_are_normalised_before_any_comparison(tmp_path):
    (tmp_path / "train.list").write_bytes("\ufeffAAA\r\n./BBB\r\n  CCC/  \r\n\r\n.\\DDD\\\r\n".encode())
    (tmp_path / "test.list").write_bytes(b"./AAA/\n")
    splits = LA.read_splits(tmp_path)
    assert splits == {"train": ["AAA", "BBB", "CCC", "DDD"], "test": ["AAA"]}
    with pytest.raises(DataError, match="split lists 'train' and 'test' overlap \\(1\\): AAA"):
        check_disjoint(splits)
    (tmp_path / "test.list").write_text("EEE\n./EEE\n")
    with pytest.raises(DataError, match="split list 'test' has duplicate entries: EEE"):
        check_disjoint(LA.read_splits(tmp_path))


def test_split_entries_that_are_paths(tmp_path):
    (tmp_path / "train.list").write_text("AAA\nTraining Set/BBB\n")
    (tmp_path / "test.list").write_text("..\n")
    with pytest.raises(DataError, match=r"train.list has entries that are paths, not IDs: 'Training Set/BBB'"):
        LA.read_splits(tmp_path)


@pytest.mark.parametrize("kind", ["directory", "symlink_loop"])
def test_split_list_that_is_not_a_file(tmp_path, kind):
    import os

    (tmp_path / "train.list").write_text("AAA\n")
    if kind == "directory":
        (tmp_path / "test.list").mkdir()
    else:
        os.symlink("test.list", tmp_path / "test.list")
    expected = "is a directory, not a file" if kind == "directory" else "is a symlink loop"
    with pytest.raises(DataError, match=f"bad split list: {tmp_path / 'test.list'} {expected}"):
        LA.read_splits(tmp_path)
