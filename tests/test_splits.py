"""Split lists and labelled subsets against the official lists (protocol section 3)."""

from pathlib import Path

import pytest

from ssnet.data.splits import (check_disjoint, labelled_cases_la, labelled_slices_acdc, patients_of,
                               ratio_to_count, read_splits)
from ssnet.errors import DataError

OFFICIAL = Path(__file__).resolve().parents[1] / "resources" / "splits"


def test_official_la():
    s = read_splits(OFFICIAL / "LA", "LA")
    assert len(s["train"]) == 80 and len(s["test"]) == 20
    assert s["train"] == sorted(s["train"])
    check_disjoint(s)
    assert labelled_cases_la(s["train"], 8) == s["train"][:8]
    with pytest.raises(ValueError):
        labelled_cases_la(s["train"], 81)


def test_official_acdc_labelled_slices():
    s = read_splits(OFFICIAL / "ACDC", "ACDC")
    assert (len(s["train"]), len(s["val"]), len(s["test"]), len(s["train_slices"])) == (140, 20, 40, 1312)
    check_disjoint(s)
    expected = {3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}
    for n, count in expected.items():
        got = labelled_slices_acdc(s["train_slices"], s["train"], n)
        assert len(got) == count
        assert got == s["train_slices"][:count]  # a prefix: train_slices is in train.list patient order
    assert len(patients_of(s["train"])) == 70
    assert patients_of(s["train"])[:2] == ["patient099", "patient038"]


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
        read_splits(tmp_path, "LA")
