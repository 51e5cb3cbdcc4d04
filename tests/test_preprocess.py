"""Preprocessing (protocol section 2): golden parity, invariants and bad-input handling."""

import csv
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from ssnet.data.preprocess import la_margins, preprocess_acdc, preprocess_dataset, preprocess_la
from ssnet.data.synthetic import make_synthetic
from ssnet.errors import ConfigError, DataError
from ssnet.io import read_list

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("GOLDEN_DIR", ROOT / "tests" / "golden"))


def _write_nrrd_xyz(array_xyz: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0))), str(path),
                    useCompression=False)


# --------------------------------------------------------------------------- golden parity
def test_la_golden_parity(tmp_path):
    case = json.loads((GOLDEN / "manifest.json").read_text())["cases"]["la_preprocessing"]
    z = np.load(GOLDEN / case["files"]["arrays"])
    raw = tmp_path / "raw"
    margins, ids = {}, []
    for k, c in enumerate(case["cases"]):
        cid = c["case_id"]
        ids.append(cid)
        _write_nrrd_xyz(z[f"case{k}_raw_image"], raw / "Training Set" / cid / "lgemri.nrrd")
        _write_nrrd_xyz(z[f"case{k}_raw_label"], raw / "Training Set" / cid / "laendo.nrrd")
        margins[cid] = [v[2] for v in c["margins"]["low_high_value"][:4]]
    out = tmp_path / "out"
    rows = preprocess_la(raw, ids, out, seed=0, margins=margins)
    for k, c in enumerate(case["cases"]):
        with h5py.File(out / "cases" / f"{c['case_id']}.h5", "r") as f:
            image, label = f["image"][()], f["label"][()]
            assert f["image"].compression == "gzip" and f["label"].compression == "gzip"
        ref_img, ref_lab = z[f"case{k}_image"], z[f"case{k}_label"]
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == ref_img.shape == tuple(c["output_shape"])
        np.testing.assert_allclose(image, ref_img, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(label, ref_lab)
        (x0, x1), (y0, y1) = c["crop_box_xy"]
        assert (rows[k]["x_lo"], rows[k]["x_hi"], rows[k]["y_lo"], rows[k]["y_hi"]) == (x0, x1, y0, y1)
    with open(out / "crop_boxes.csv") as handle:
        assert [r["case"] for r in csv.DictReader(handle)] == ids


# --------------------------------------------------------------------------- synthetic fixtures
@pytest.fixture(scope="module")
def la_synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("la")
    make_synthetic("LA", base / "raw", base / "splits", {"n_cases": 3, "size_xy": [40, 44], "n_slices": 8}, seed=3)
    return base


@pytest.fixture(scope="module")
def acdc_synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("acdc")
    make_synthetic("ACDC", base / "raw", base / "splits",
                   {"n_patients": 4, "n_slices": [4, 5], "size_hw": [36, 44], "val_fraction": 0.25,
                    "test_fraction": 0.25}, seed=4)
    return base


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "work"
    shutil.copytree(src, dst)
    return dst


def test_la_invariants_and_seeded_margins(la_synth, tmp_path):
    out = tmp_path / "out"
    summary = preprocess_dataset("LA", la_synth / "raw", la_synth / "splits", out, params={"seed": 7})
    ids = read_list(la_synth / "splits" / "train.list") + read_list(la_synth / "splits" / "test.list")
    assert summary["cases"] == len(ids)
    assert read_list(out / "splits" / "train.list") == read_list(la_synth / "splits" / "train.list")
    rows = {r["case"]: r for r in csv.DictReader(open(out / "crop_boxes.csv"))}
    for cid in ids:
        raw_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(la_synth / "raw" / "Training Set" / cid / "laendo.nrrd")))
        raw_lab = raw_lab.transpose(2, 1, 0)
        with h5py.File(out / "cases" / f"{cid}.h5", "r") as f:
            image, label = f["image"][()], f["label"][()]
        assert label.shape == image.shape and image.shape[2] == raw_lab.shape[2]  # z not cropped
        assert label.sum() == (raw_lab == 255).sum()  # the crop contains the whole label
        assert set(np.unique(label)) == {0, 1}
        m = la_margins(7, cid)
        assert all(10 <= v < 20 for v in m)
        r = rows[cid]
        assert [int(r[k]) for k in ("m_x_lo", "m_x_hi", "m_y_lo", "m_y_hi")] == list(m)
    # same seed -> same boxes; different seed -> different margins somewhere
    assert la_margins(7, ids[0]) == la_margins(7, ids[0])
    assert any(la_margins(7, c) != la_margins(8, c) for c in ids)


def test_acdc_invariants(acdc_synth, tmp_path):
    out = tmp_path / "out"
    summary = preprocess_dataset("ACDC", acdc_synth / "raw", acdc_synth / "splits", out, params={})
    splits = {k: read_list(acdc_synth / "splits" / f"{k}.list") for k in ("train", "val", "test", "train_slices")}
    assert summary["slices"] == len(splits["train_slices"])
    assert sorted(p.name for p in (out / "slices").iterdir()) == sorted(f"{s}.h5" for s in splits["train_slices"])
    raw = acdc_synth / "raw" / "training"
    for vol in splits["train"] + splits["val"] + splits["test"]:
        patient, f = vol.split("_frame0")
        info = dict(ln.split(": ") for ln in (raw / patient / "Info.cfg").read_text().splitlines())
        frame = int(info["ED"] if f == "1" else info["ES"])  # ED -> frame01, ES -> frame02
        src = sitk.ReadImage(str(raw / patient / f"{patient}_frame{frame:02d}.nii.gz"))
        src_img = sitk.GetArrayFromImage(src).astype(np.float64)
        src_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / patient / f"{patient}_frame{frame:02d}_gt.nii.gz")))
        with h5py.File(out / "volumes" / f"{vol}.h5", "r") as h:
            image, label, spacing = h["image"][()], h["label"][()], h.attrs["spacing"]
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.min() == 0.0 and image.max() == 1.0
        expected = ((src_img - src_img.min()) / (src_img.max() - src_img.min())).astype(np.float32)
        np.testing.assert_array_equal(image, expected)
        np.testing.assert_array_equal(label, src_lab)
        np.testing.assert_allclose(spacing, src.GetSpacing()[::-1])
        if vol in splits["train"]:
            n = image.shape[0]
            for k in range(1, n + 1):  # K 1-based, one slice per z
                with h5py.File(out / "slices" / f"{vol}_slice_{k}.h5", "r") as h:
                    np.testing.assert_array_equal(h["image"][()], image[k - 1])
                    np.testing.assert_array_equal(h["label"][()], label[k - 1])
            assert not (out / "slices" / f"{vol}_slice_{n + 1}.h5").exists()
            assert not (out / "slices" / f"{vol}_slice_0.h5").exists()


def test_unknown_preprocess_param(la_synth, tmp_path):
    with pytest.raises(ConfigError, match="bogus"):
        preprocess_dataset("LA", la_synth / "raw", la_synth / "splits", tmp_path / "out", {"bogus": 1})
    with pytest.raises(ConfigError, match="min_extent"):
        preprocess_dataset("LA", la_synth / "raw", la_synth / "splits", tmp_path / "out", {"min_extent": 0})
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad inputs (LA)
def _first_case(work: Path) -> tuple[str, Path]:
    cid = read_list(work / "splits" / "train.list")[0]
    return cid, work / "raw" / "Training Set" / cid


def _la_break(kind: str, folder: Path) -> Path:
    img, lab = folder / "lgemri.nrrd", folder / "laendo.nrrd"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(lab)))
    if kind == "missing_image":
        img.unlink()
        return img
    if kind == "missing_label":
        lab.unlink()
        return lab
    if kind == "shape_mismatch":
        sitk.WriteImage(sitk.GetImageFromArray(arr[:, :-2, :]), str(lab), useCompression=False)
        return lab
    if kind == "bad_label_values":
        arr = arr.copy()
        arr[arr == 255] = 1
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(lab), useCompression=False)
        return lab
    if kind == "empty_label":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros_like(arr)), str(lab), useCompression=False)
        return lab
    if kind == "truncated":
        data = img.read_bytes()
        img.write_bytes(data[: len(data) - 500])
        return img
    if kind == "constant_image":
        sitk.WriteImage(sitk.GetImageFromArray(np.full_like(arr, 7)), str(img), useCompression=False)
        return img
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_image", "missing_label", "shape_mismatch", "bad_label_values",
                                  "empty_label", "truncated", "constant_image"])
def test_la_bad_input(la_synth, tmp_path, kind):
    work = _copy(la_synth, tmp_path)
    cid, folder = _first_case(work)
    broken = _la_break(kind, folder)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        preprocess_dataset("LA", work / "raw", work / "splits", out, params={})
    assert str(broken) in str(err.value)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary left behind


def test_la_missing_cases_listed(la_synth, tmp_path):
    work = _copy(la_synth, tmp_path)
    ids = read_list(work / "splits" / "train.list")
    for cid in ids[:2]:
        shutil.rmtree(work / "raw" / "Training Set" / cid)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        preprocess_dataset("LA", work / "raw", work / "splits", out, params={})
    assert all(cid in str(err.value) for cid in ids[:2])
    assert not out.exists()


def test_overlapping_splits(la_synth, tmp_path):
    work = _copy(la_synth, tmp_path)
    train = read_list(work / "splits" / "train.list")
    (work / "splits" / "test.list").write_text(train[0] + "\n")
    with pytest.raises(DataError, match=train[0]):
        preprocess_dataset("LA", work / "raw", work / "splits", tmp_path / "out", params={})
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad inputs (ACDC)
def _acdc_patient(work: Path) -> Path:
    patient = read_list(work / "splits" / "val.list")[0].split("_")[0]
    return work / "raw" / "training" / patient


@pytest.mark.parametrize("kind", ["truncated_gz", "bad_info", "missing_es", "label_value", "shape_mismatch"])
def test_acdc_bad_input(acdc_synth, tmp_path, kind):
    work = _copy(acdc_synth, tmp_path)
    folder = _acdc_patient(work)
    info = dict(ln.split(": ") for ln in (folder / "Info.cfg").read_text().splitlines())
    stem = folder / f"{folder.name}_frame{int(info['ES']):02d}"
    if kind == "truncated_gz":
        broken = Path(f"{stem}.nii.gz")
        data = broken.read_bytes()
        broken.write_bytes(data[: len(data) // 2])
    elif kind == "bad_info":
        broken = folder / "Info.cfg"
        broken.write_text("ED 1\nES: 11\n")
    elif kind == "missing_es":
        broken = Path(f"{stem}_gt.nii.gz")
        broken.unlink()
    elif kind in ("label_value", "shape_mismatch"):
        broken = Path(f"{stem}_gt.nii.gz")
        src = sitk.ReadImage(str(broken))
        arr = sitk.GetArrayFromImage(src)
        arr = np.where(arr == 3, 4, arr).astype(arr.dtype) if kind == "label_value" else arr[:, 1:, :]
        new = sitk.GetImageFromArray(arr)
        new.SetSpacing(src.GetSpacing())
        sitk.WriteImage(new, str(broken))
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        preprocess_dataset("ACDC", work / "raw", work / "splits", out, params={})
    assert str(broken) in str(err.value)
    assert not out.exists()


def test_preprocess_acdc_direct_writes_all_volumes(acdc_synth, tmp_path):
    splits = {k: read_list(acdc_synth / "splits" / f"{k}.list") for k in ("train", "val", "test")}
    counts = preprocess_acdc(acdc_synth / "raw", splits, tmp_path / "out")
    assert counts["volumes"] == sum(len(v) for v in splits.values())
    assert len(list((tmp_path / "out" / "volumes").glob("*.h5"))) == counts["volumes"]


def test_manifest_lists_every_input_with_sha256(la_synth, tmp_path):
    from ssnet.data.provenance import read_manifest
    from ssnet.io import sha256_file

    out = tmp_path / "out"
    preprocess_dataset("LA", la_synth / "raw", la_synth / "splits", out, params={}, source="synthetic")
    rows = read_manifest(out / "manifest.csv")
    ids = read_list(la_synth / "splits" / "train.list") + read_list(la_synth / "splits" / "test.list")
    images = {r["case"]: r for r in rows if r["role"] == "image"}
    assert sorted(images) == sorted(ids) and sum(r["role"] == "label" for r in rows) == len(ids)
    for row in rows:
        assert sha256_file(row["input"]) == row["sha256"]
        assert all((out / o).is_file() for o in row["outputs"])
    assert images[ids[0]]["outputs"] == [f"cases/{ids[0]}.h5", "crop_boxes.csv"]
    assert not any(Path(r["input"]).name in ("lawall.nrrd", "desktop.ini") for r in rows)


# --------------------------------------------------------------------------- Info.cfg and geometry checks
@pytest.mark.parametrize("text,expected", [
    ("ED: 1\nES: 12\nNbFrame: 30\n", {"ED": 1, "ES": 12}),
    ("\ufeffED: 1\r\nES: 12\r\nNbFrame: 30\r\n", {"ED": 1, "ES": 12}),  # BOM and CRLF tolerated
    ("ED: 2.7\nES: 12\n", "ED is not an integer frame number: '2.7'"),
    ("ED: 2.0\nES: 12\n", "ED is not an integer frame number: '2.0'"),
    ("ED: 1\nES: 1e1\n", "ES is not an integer frame number: '1e1'"),
    ("ED: 5\nES: 5\n", "ED and ES are the same frame \\(5\\)"),
    ("ED: 0\nES: 5\n", "ED must be >= 1"),
    ("ED: 1\nES: 31\nNbFrame: 30\n", "ES=31 exceeds NbFrame=30"),
    ("ED: 1\nES: 12\nNbFrame: 30.5\n", "NbFrame is not an integer frame number"),
], ids=["plain", "bom_crlf", "fraction", "float", "exponent", "ed_equals_es", "zero", "beyond_nbframe",
        "nbframe_fraction"])
def test_info_cfg_frame_numbers(tmp_path, text, expected):
    from ssnet.data.checks import parse_info_cfg

    path = tmp_path / "Info.cfg"
    path.write_bytes(text.encode("utf-8"))
    if isinstance(expected, dict):
        info = parse_info_cfg(path)
        assert {k: info[k] for k in expected} == expected
    else:
        with pytest.raises(DataError, match=f"malformed Info.cfg {path}: {expected}"):
            parse_info_cfg(path)


def test_geometry_compared_within_tolerance():
    from ssnet.data.checks import Geometry, check_same_geometry

    eye = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    image = Geometry((10, 12, 8), (1.5625, 1.5625, 10.0), (-120.3, 88.1, 5.0), eye)
    noisy = Geometry((10, 12, 8), (1.5625001, 1.5625, 10.0), (-120.30001, 88.1, 5.0000002),
                     tuple(v + 1e-7 for v in eye))  # float32 header noise: accepted
    check_same_geometry("img", "lab", image, noisy)
    for field, other in [("shape", image._replace(size=(10, 12, 9))),
                         ("spacing", image._replace(spacing=(1.5625, 1.5625, 5.0))),
                         ("origin", image._replace(origin=(-120.3, 88.1, 15.0))),
                         ("direction", image._replace(direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)))]:
        with pytest.raises(DataError, match=f"image img has {field} .* but label lab has {field}"):
            check_same_geometry("img", "lab", image, other)
