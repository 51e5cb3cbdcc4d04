"""Synthetic raw archives: real formats, determinism per seed, parameter validation."""

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ssnet.data.checks import parse_info_cfg
from ssnet.config.params import complete
from ssnet.data.synthetic import make_synthetic
from ssnet.datasets import get_dataset
from ssnet.errors import ConfigError
from ssnet.io import read_list, sha256_file

LA_PARAMS = {"n_cases": 4, "size_xy": [[48, 52], [56, 48]], "n_slices": 12}
ACDC_PARAMS = {"n_patients": 5, "n_slices": [4, 6], "size_hw": [40, 56]}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("dataset,params", [("LA", LA_PARAMS), ("ACDC", ACDC_PARAMS)])
def test_deterministic_per_seed(tmp_path, dataset, params):
    a = make_synthetic(dataset, tmp_path / "a" / "raw", tmp_path / "a" / "splits", params, seed=5)
    b = make_synthetic(dataset, tmp_path / "b" / "raw", tmp_path / "b" / "splits", params, seed=5)
    make_synthetic(dataset, tmp_path / "c" / "raw", tmp_path / "c" / "splits", params, seed=6)
    assert a["splits"] == b["splits"]
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_la_format(tmp_path):
    out = make_synthetic("LA", tmp_path / "raw", tmp_path / "splits", LA_PARAMS, seed=1)
    root = tmp_path / "raw" / "Training Set"
    ids = sorted(p.name for p in root.iterdir())
    assert ids == out["cases"] and len(ids) == LA_PARAMS["n_cases"]
    assert all(re.fullmatch(r"[A-Z0-9]{20}", i) for i in ids)
    assert len(list(root.glob("*/desktop.ini"))) == 1
    assert len(list(root.glob("*/lawall.nrrd"))) >= 1
    sizes = set()
    for cid in ids:
        img_p, lab_p = root / cid / "lgemri.nrrd", root / cid / "laendo.nrrd"
        header = img_p.read_bytes()[:400].decode("latin-1")
        assert "encoding: raw" in header and "type: unsigned char" in header
        im = sitk.ReadImage(str(img_p))
        assert im.GetSpacing() == (1.0, 1.0, 1.0) and im.GetDimension() == 3
        img, lab = _read(img_p), _read(lab_p)
        assert img.dtype == np.uint8 and lab.dtype == np.uint8
        assert img.shape == lab.shape and img.shape[0] == LA_PARAMS["n_slices"]  # (z, y, x)
        sizes.add(img.shape[1:][::-1])
        assert set(np.unique(lab)) == {0, 255}
        # low contrast: foreground and background intensity distributions overlap
        fg, bg = img[lab == 255].astype(float), img[lab == 0].astype(float)
        assert fg.mean() > bg.mean()
        assert np.percentile(fg, 10) < np.percentile(bg, 95)
    assert sizes <= {tuple(s) for s in LA_PARAMS["size_xy"]}
    splits = tmp_path / "splits"
    train, test = read_list(splits / "train.list"), read_list(splits / "test.list")
    assert train == sorted(train) and not set(train) & set(test) and sorted(train + test) == ids


def test_acdc_format(tmp_path):
    out = make_synthetic("ACDC", tmp_path / "raw", tmp_path / "splits", ACDC_PARAMS, seed=2)
    root = tmp_path / "raw" / "training"
    patients = sorted(p.name for p in root.iterdir())
    assert patients == [f"patient{i:03d}" for i in range(1, 6)] == out["cases"]
    eds = []
    for p in patients:
        lines = (root / p / "Info.cfg").read_text().splitlines()
        assert [ln.split(":")[0] for ln in lines] == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        info = parse_info_cfg(root / p / "Info.cfg")
        eds.append(info["ED"])
        assert info["Group"] in {"DCM", "HCM", "MINF", "NOR", "RV"}
        assert 1 <= info["ED"] < info["ES"] <= int(info["NbFrame"])
        for frame in (info["ED"], info["ES"]):
            img_p = root / p / f"{p}_frame{frame:02d}.nii.gz"
            im = sitk.ReadImage(str(img_p))
            img, lab = sitk.GetArrayFromImage(im), _read(root / p / f"{p}_frame{frame:02d}_gt.nii.gz")
            assert img.shape == lab.shape
            assert ACDC_PARAMS["n_slices"][0] <= img.shape[0] <= ACDC_PARAMS["n_slices"][1]
            assert np.issubdtype(img.dtype, np.integer) and img.min() >= 0 and img.max() <= 2000
            assert im.GetSpacing()[2] in (5.0, 10.0) and 1.0 < im.GetSpacing()[0] < 2.0
            assert set(np.unique(lab)) == {0, 1, 2, 3}
            # LV (3) enclosed by myocardium (2): LV area > 0 on every slice
            assert all((lab[k] == 3).any() for k in range(lab.shape[0]))
    assert any(e != 1 for e in eds)
    s = out["splits"]
    assert len(s["train"]) == 6 and len(s["val"]) == 2 and len(s["test"]) == 2
    assert all(re.fullmatch(r"patient\d{3}_frame0[12]", v) for k in ("train", "val", "test") for v in s[k])
    assert read_list(tmp_path / "splits" / "train_slices.list") == s["train_slices"]
    first = s["train_slices"][0]
    assert first == f"{s['train'][0]}_slice_1"


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_unknown_params_rejected(tmp_path, dataset):
    with pytest.raises(ConfigError, match="bogus_param"):
        make_synthetic(dataset, tmp_path / "raw", tmp_path / "splits", {"bogus_param": 1}, seed=0)
    with pytest.raises(ConfigError, match="test_fraction"):
        make_synthetic(dataset, tmp_path / "raw", tmp_path / "splits", {"test_fraction": 1.0}, seed=0)
    with pytest.raises(ConfigError, match="unknown dataset 'BraTS'"):
        make_synthetic("BraTS", tmp_path / "raw", tmp_path / "splits", seed=0)
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("dataset,params", [("LA", LA_PARAMS), ("ACDC", {**ACDC_PARAMS, "val_fraction": 0.2})])
def test_split_sizes_are_known_before_generation(tmp_path, dataset, params):
    """What the workflow checks labelled counts against at parse time is what the generator writes."""
    data = get_dataset(dataset)
    sizes = data.synthetic_split_sizes(complete(data.synthetic_params, params, "synthetic"))
    splits = make_synthetic(dataset, tmp_path / "raw", tmp_path / "splits", params, seed=1)["splits"]
    assert {name: data.scan_count(splits.get(name, [])) for name in sizes} == sizes
    with pytest.raises(ConfigError, match=f"datasets.{dataset}.synthetic: .* leave no training"):
        data.synthetic_split_sizes(complete(data.synthetic_params, {**params, "test_fraction": 0.99}, "synthetic"))
