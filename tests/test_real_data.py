"""Both real input kinds (raw archives, preprocessed releases) of LA and ACDC, on miniature copies of
their layouts with every official case ID: import, provenance, and every input check."""

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from ssnet.data.fixtures import acdc_depths, make_layout
from ssnet.data.preprocess import preprocess_dataset
from ssnet.data.provenance import read_manifest
from ssnet.errors import DataError
from ssnet.io import read_list, sha256_file, write_lines

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "resources" / "splits"
LA_TRAIN = read_list(OFFICIAL / "LA" / "train.list")
LA_TEST = read_list(OFFICIAL / "LA" / "test.list")
ACDC_TRAIN = read_list(OFFICIAL / "ACDC" / "train.list")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layouts")
    for dataset in ("LA", "ACDC"):
        for kind in ("raw", "preprocessed"):
            make_layout(dataset, kind, root / dataset / kind, seed=2)
    return root


def _work(layouts: Path, dataset: str, kind: str, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of one layout and of the official lists."""
    work, splits = tmp_path / "in", tmp_path / "splits"
    shutil.copytree(layouts / dataset / kind, work)
    shutil.copytree(OFFICIAL / dataset, splits)
    return work, splits


def _run(dataset, kind, work, splits, out):
    return preprocess_dataset(dataset, work, splits, out, params={"seed": 1} if dataset == "LA" else {}, source=kind)


# --------------------------------------------------------------------------- fixture layouts
def test_layouts_have_every_official_case(layouts):
    la_raw = layouts / "LA" / "raw" / "Training Set"
    assert sorted(p.name for p in la_raw.iterdir()) == sorted(LA_TRAIN + LA_TEST)
    assert any((la_raw / c / "lawall.nrrd").exists() for c in LA_TRAIN)
    assert any((la_raw / c / "desktop.ini").exists() for c in LA_TRAIN + LA_TEST)
    img = sitk.ReadImage(str(la_raw / LA_TRAIN[0] / "lgemri.nrrd"))
    assert img.GetSize()[2] == 88 and img.GetPixelIDTypeAsString() == "8-bit unsigned integer"
    la_pre = layouts / "LA" / "preprocessed" / "2018LA_Seg_Training Set"
    with h5py.File(la_pre / LA_TEST[0] / "mri_norm2.h5", "r") as f:
        assert f["image"].dtype == np.float32 and f["label"].dtype == np.uint8 and f["image"].shape[2] == 88
    acdc_raw = layouts / "ACDC" / "raw" / "training"
    assert len([p for p in acdc_raw.iterdir() if p.name.startswith("patient")]) == 100
    info = (acdc_raw / "patient090" / "Info.cfg").read_text()
    assert "ED: 4" in info and "ES: 11" in info
    assert (acdc_raw / "patient090" / "patient090_frame04_gt.nii.gz").is_file()
    depth = acdc_depths(OFFICIAL / "ACDC")
    data = layouts / "ACDC" / "preprocessed" / "data"
    assert len(list(data.glob("patient*.h5"))) == 200
    assert len(list((data / "slices").glob("*.h5"))) == sum(depth.values()) == 1902


def test_fixture_generator_is_deterministic(tmp_path):
    a = make_layout("ACDC", "raw", tmp_path / "a", seed=3)
    b = make_layout("ACDC", "raw", tmp_path / "b", seed=3)
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nii.gz"))[:20]
    assert all(sha256_file(tmp_path / "a" / f) == sha256_file(tmp_path / "b" / f) for f in files)


# --------------------------------------------------------------------------- both kinds end in one layout
@pytest.mark.parametrize("kind", ["raw", "preprocessed"])
def test_la_import_layout_and_manifest(layouts, tmp_path, kind):
    out = tmp_path / "out"
    summary = _run("LA", kind, layouts / "LA" / kind, OFFICIAL / "LA", out)
    assert summary["source"] == kind and summary["cases"] == 100 and summary["warnings"] == []
    assert sorted(p.stem for p in (out / "cases").iterdir()) == sorted(LA_TRAIN + LA_TEST)
    assert read_list(out / "splits" / "train.list") == LA_TRAIN
    with h5py.File(out / "cases" / f"{LA_TRAIN[0]}.h5", "r") as f:
        image, label = f["image"][()], f["label"][()]
    assert image.dtype == np.float32 and label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    assert image.shape[2] == 88
    rows = read_manifest(out / "manifest.csv")
    inputs = {Path(r["input"]).name for r in rows}
    assert "desktop.ini" not in inputs and "lawall.nrrd" not in inputs
    assert {"train.list", "test.list"} <= inputs
    data_rows = [r for r in rows if r["role"] != "split_list"]
    assert len(data_rows) == (200 if kind == "raw" else 100)  # image + label per case / one h5 per case
    for row in rows:
        assert sha256_file(row["input"]) == row["sha256"] and Path(row["input"]).stat().st_size == row["bytes"]
        assert row["outputs"] and all((out / o).is_file() for o in row["outputs"])
    if kind == "preprocessed":  # imported byte for byte
        row = next(r for r in rows if r["case"] == LA_TEST[0])
        assert sha256_file(out / row["outputs"][0]) == row["sha256"]
    else:
        assert (out / "crop_boxes.csv").is_file()
    assert json.loads((out / "preprocess.json").read_text())["source"] == kind


@pytest.mark.parametrize("kind", ["raw", "preprocessed"])
def test_acdc_import_layout_and_manifest(layouts, tmp_path, kind):
    out = tmp_path / "out"
    summary = _run("ACDC", kind, layouts / "ACDC" / kind, OFFICIAL / "ACDC", out)
    assert (summary["volumes"], summary["slices"]) == (200, 1312)
    slices = read_list(OFFICIAL / "ACDC" / "train_slices.list")
    assert sorted(p.stem for p in (out / "slices").iterdir()) == sorted(slices)
    assert read_list(out / "splits" / "train_slices.list") == slices
    with h5py.File(out / "volumes" / "patient090_frame01.h5", "r") as f:
        image, label = f["image"][()], f["label"][()]
        has_spacing = "spacing" in f.attrs
    assert has_spacing == (kind == "raw")  # the preprocessed release does not record spacing
    assert image.dtype == np.float32 and image.min() == 0 and image.max() == 1
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    with h5py.File(out / "slices" / "patient090_frame01_slice_1.h5", "r") as f:
        np.testing.assert_array_equal(f["image"][()], image[0])
    rows = read_manifest(out / "manifest.csv")
    names = {Path(r["input"]).name for r in rows}
    assert not any(n.endswith("_4d.nii.gz") or n == "desktop.ini" for n in names)
    if kind == "raw":  # patient090: ED is frame 4 -> frame01, ES frame 11 -> frame02
        row = next(r for r in rows if r["input"].endswith("patient090_frame04.nii.gz"))
        assert row["outputs"][0] == "volumes/patient090_frame01.h5"
        row = next(r for r in rows if r["input"].endswith("patient090_frame11_gt.nii.gz"))
        assert row["outputs"][0] == "volumes/patient090_frame02.h5"
        assert sum(r["role"] == "info" for r in rows) == 100
    else:
        assert sum(r["role"] == "release_slice" for r in rows) == 1312
    for row in rows[:50] + rows[-50:]:
        assert sha256_file(row["input"]) == row["sha256"]
        assert all((out / o).is_file() for o in row["outputs"])


def test_preprocessed_release_without_train_slices_list(layouts, tmp_path):
    _, splits = _work(layouts, "ACDC", "preprocessed", tmp_path)
    (splits / "train_slices.list").unlink()
    summary = _run("ACDC", "preprocessed", layouts / "ACDC" / "preprocessed", splits, tmp_path / "out")
    assert summary["slices"] == 1312  # every slice of the train volumes, K = 1..Z


def _circulating_acdc_release(layouts: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The ACDC release as it circulates with the reference code: training slices under data/slices/,
    val/test volumes under data/, no training volume."""
    work, splits = _work(layouts, "ACDC", "preprocessed", tmp_path)
    for volume in ACDC_TRAIN:
        (work / "data" / f"{volume}.h5").unlink()
    return work, splits


@pytest.mark.parametrize("slice_list", [True, False], ids=["train_slices.list", "slices-found"])
def test_circulating_acdc_release_without_training_volumes(layouts, tmp_path, slice_list):
    work, splits = _circulating_acdc_release(layouts, tmp_path)
    if not slice_list:
        (splits / "train_slices.list").unlink()
    out = tmp_path / "out"
    summary = _run("ACDC", "preprocessed", work, splits, out)
    assert (summary["volumes"], summary["slices"]) == (60, 1312)
    official = read_list(OFFICIAL / "ACDC" / "train_slices.list")
    written = read_list(out / "splits" / "train_slices.list")
    assert written == official if slice_list else sorted(written) == sorted(official)  # depths from the slices
    assert sorted(p.stem for p in (out / "volumes").iterdir()) == sorted(
        read_list(OFFICIAL / "ACDC" / "val.list") + read_list(OFFICIAL / "ACDC" / "test.list"))


def test_circulating_acdc_release_checks_slice_shapes_per_volume(layouts, tmp_path):
    work, splits = _circulating_acdc_release(layouts, tmp_path)
    sl = work / "data" / "slices" / f"{ACDC_TRAIN[0]}_slice_2.h5"
    _h5_rewrite(sl, image=_h5(sl, "image")[1:], label=_h5(sl, "label")[1:])
    with pytest.raises(DataError, match=f"shape mismatch: slice {sl}.* the other slices of {ACDC_TRAIN[0]}"):
        _run("ACDC", "preprocessed", work, splits, tmp_path / "out")


# --------------------------------------------------------------------------- warnings (not errors)
def _write_nrrd(array_zyx, path, spacing=(1.0, 1.0, 1.0), origin=None, direction=None):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=False)


def _read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def _la_case_with_60_slices(layouts, tmp_path) -> tuple[Path, Path, Path]:
    """(work, splits, case folder): the raw LA layout with one case cut to 60 slices."""
    work, splits = _work(layouts, "LA", "raw", tmp_path)
    folder = work / "Training Set" / LA_TEST[-1]
    for name in ("lgemri.nrrd", "laendo.nrrd"):
        arr, _ = _read(folder / name)
        _write_nrrd(np.ascontiguousarray(arr[:60]), folder / name)
    return work, splits, folder


def test_la_raw_depth_other_than_88_is_a_warning(layouts, tmp_path, capsys):
    work, splits, folder = _la_case_with_60_slices(layouts, tmp_path)
    summary = _run("LA", "raw", work, splits, tmp_path / "out")
    message = f"{folder / 'lgemri.nrrd'} has 60 slices along z; real LA volumes have 88"
    assert summary["warnings"] == [message]
    assert f"WARNING: {message}" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "preprocess.json").read_text())["warnings"] == [message]


def test_depth_warning_reaches_job_log_and_console(layouts, tmp_path, capsys):
    from ssnet.jobs import run_logged

    work, splits, folder = _la_case_with_60_slices(layouts, tmp_path)
    log = tmp_path / "job.log"
    run_logged(str(log), _run, "LA", "raw", work, splits, tmp_path / "out")
    line = f"WARNING: {folder / 'lgemri.nrrd'} has 60 slices along z; real LA volumes have 88"
    assert line in log.read_text().splitlines()
    assert capsys.readouterr().err.splitlines().count(line) == 1


def test_synthetic_source_has_no_depth_warning(tmp_path, capsys):
    from ssnet.data.synthetic import make_synthetic

    make_synthetic("LA", tmp_path / "raw", tmp_path / "splits", {"n_cases": 3, "size_xy": [32, 32], "n_slices": 8})
    summary = preprocess_dataset("LA", tmp_path / "raw", tmp_path / "splits", tmp_path / "out", source="synthetic",
                                 params={"min_extent": 16})
    assert summary["warnings"] == [] and "WARNING" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown data source 'nrrd'"):
        preprocess_dataset("LA", tmp_path / "raw", tmp_path / "splits", tmp_path / "o2", source="nrrd")


# --------------------------------------------------------------------------- bad inputs
def _h5_rewrite(path: Path, **changes):
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f.keys()}
    data.update(changes)
    path.unlink()
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if value is not None:
                f.create_dataset(key, data=value)


def _h5(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[key][()]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _make_directory(path: Path) -> Path:
    """A directory where a file belongs."""
    path.unlink()
    path.mkdir()
    return path


def _make_loop(path: Path) -> Path:
    """A symlink to itself where a file or folder belongs."""
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.symlink(path.name, path)
    return path


FLIP_X = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _break_la_raw(work: Path, splits: Path, defect: str):
    root = work / "Training Set"
    folder = root / LA_TRAIN[0]
    img, lab = folder / "lgemri.nrrd", folder / "laendo.nrrd"
    arr, _ = _read(lab)
    image, _ = _read(img)
    if defect == "missing_cases":
        for cid in (LA_TRAIN[3], LA_TEST[5]):
            shutil.rmtree(root / cid)
        return [LA_TRAIN[3], LA_TEST[5], "2 listed case(s) missing"]
    if defect == "missing_label":
        lab.unlink()
        return [f"missing label file for case {LA_TRAIN[0]}: {lab}"]
    if defect == "truncated":
        _truncate(img)
        return [f"unreadable or truncated image file {img}"]
    if defect == "label_dtype":
        _write_nrrd((arr > 0).astype(np.float32) * 255, lab)
        return [f"wrong dtype in {lab}: the label is float32, expected an integer type"]
    if defect == "image_dtype":
        _write_nrrd(np.stack([image, image], axis=-1).astype(np.float32), img)  # a 2-component vector image
        return [str(img)]
    if defect == "shape":
        _write_nrrd(np.ascontiguousarray(arr[:, :-2, :]), lab)
        return ["shape mismatch", str(img), str(lab)]
    if defect == "geometry":
        _write_nrrd(arr, lab, spacing=(1.0, 1.0, 2.5))
        return ["geometry mismatch", str(lab), "spacing"]
    if defect == "origin":
        _write_nrrd(arr, lab, origin=(0.0, 4.0, 0.0))
        return [f"geometry mismatch: image {img} has origin (0, 0, 0) but label {lab} has origin (0, 4, 0)"]
    if defect == "direction":
        _write_nrrd(arr, lab, direction=FLIP_X)
        return ["geometry mismatch", str(lab), "has direction (-1, 0, 0"]
    if defect == "label_is_directory":
        _make_directory(lab)
        return [f"bad label file for case {LA_TRAIN[0]}: {lab} is a directory, not a file"]
    if defect == "image_symlink_loop":
        _make_loop(img)
        return [f"bad image file for case {LA_TRAIN[0]}: {img} is a symlink loop"]
    if defect == "case_symlink_loop":
        _make_loop(root / LA_TEST[3])
        return [f"1 listed case folder(s) not usable: {root / LA_TEST[3]} is a symlink loop"]
    if defect == "dot_slash_overlap":  # ./<ID> is the ID: a training case in test.list leaks no more
        write_lines(splits / "test.list", LA_TEST + [f"./{LA_TRAIN[7]}"])
        return ["split lists 'train' and 'test' overlap (1)", LA_TRAIN[7]]
    if defect == "trailing_slash_duplicate":
        write_lines(splits / "train.list", LA_TRAIN + [f" {LA_TRAIN[4]}/ "])
        return ["split list 'train' has duplicate entries", LA_TRAIN[4]]
    if defect == "path_entry":
        write_lines(splits / "train.list", LA_TRAIN + [f"Training Set/{LA_TRAIN[4]}"])
        return [f"split list {splits / 'train.list'} has entries that are paths, not IDs", LA_TRAIN[4]]
    if defect == "unknown_id":
        write_lines(splits / "test.list", LA_TEST + ["NOT_A_CASE"])
        return [f"1 listed case(s) missing under {root} (case folder): NOT_A_CASE (test.list)"]
    if defect == "label_values":
        _write_nrrd((arr > 0).astype(np.uint8), lab)
        return [f"label file {lab} has values outside {{0, 255}}: 1"]
    if defect == "empty_label":
        _write_nrrd(np.zeros_like(arr), lab)
        return [f"label file {lab} is empty"]
    if defect == "nan_image":
        bad = image.astype(np.float32)
        bad[0, 0, 0] = np.nan
        _write_nrrd(bad, img)
        return [f"image file {img} contains NaN"]
    if defect == "constant_image":
        _write_nrrd(np.full_like(image, 9), img)
        return [f"image file {img} is constant"]
    if defect == "overlap":
        write_lines(splits / "test.list", LA_TEST + [LA_TRAIN[7]])
        return ["split lists 'train' and 'test' overlap", LA_TRAIN[7]]
    raise AssertionError(defect)


def _break_la_pre(work: Path, splits: Path, defect: str):
    root = work / "2018LA_Seg_Training Set"
    path = root / LA_TRAIN[0] / "mri_norm2.h5"
    image, label = _h5(path, "image"), _h5(path, "label")
    if defect == "missing_cases":
        (root / LA_TRAIN[9] / "mri_norm2.h5").unlink()  # folder left, file gone
        shutil.rmtree(root / LA_TEST[0])
        return [LA_TRAIN[9], LA_TEST[0], "2 listed case(s) missing", "(no <ID>/mri_norm2.h5)"]
    if defect == "truncated":
        _truncate(path)
        return [f"unreadable or truncated h5 file {path}"]
    if defect == "missing_dataset":
        _h5_rewrite(path, label=None)
        return [f"{path}: dataset 'label' missing"]
    if defect == "image_dtype":
        _h5_rewrite(path, image=image.astype(np.float64))
        return [f"wrong dtype in {path}: dataset 'image' is float64, expected float32"]
    if defect == "label_dtype":
        _h5_rewrite(path, label=label.astype(np.int64))
        return [f"wrong dtype in {path}: dataset 'label' is int64, expected uint8"]
    if defect == "ndim":
        _h5_rewrite(path, image=image[:, :, 0], label=label[:, :, 0])
        return [f"{path}: dataset 'image' must be 3D"]
    if defect == "shape":
        _h5_rewrite(path, label=np.ascontiguousarray(label[:-1]))
        return [f"shape mismatch in {path}"]
    if defect == "label_values":
        _h5_rewrite(path, label=(label * 255).astype(np.uint8))
        return [f"label file {path} has values outside {{0, 1}}: 255"]
    if defect == "empty_label":
        _h5_rewrite(path, label=np.zeros_like(label))
        return [f"label file {path} is empty"]
    if defect == "nan_image":
        bad = image.copy()
        bad[3, 3, 3] = np.nan
        _h5_rewrite(path, image=bad)
        return [f"image file {path} contains NaN"]
    if defect == "constant_image":
        _h5_rewrite(path, image=np.zeros_like(image))
        return [f"image file {path} is constant"]
    if defect == "overlap":
        write_lines(splits / "train.list", LA_TRAIN + [LA_TEST[2]])
        return ["overlap", LA_TEST[2]]
    if defect == "dot_slash_overlap":
        write_lines(splits / "train.list", LA_TRAIN + [f"./{LA_TEST[2]}/"])
        return ["split lists 'train' and 'test' overlap (1)", LA_TEST[2]]
    if defect == "unnormalised":  # raw MRI intensities
        _h5_rewrite(path, image=(image * 26 + 55).astype(np.float32))
        return [f"implausible intensities in {path}: image mean", "datasets.LA.preprocessing.check_intensity: false"]
    if defect == "min_max_scaled":  # [0, 1] instead of z-scored
        _h5_rewrite(path, image=((image - image.min()) / (image.max() - image.min())).astype(np.float32))
        return [f"implausible intensities in {path}", "z-scored"]
    if defect == "axis_order_zyx":
        _h5_rewrite(path, image=np.ascontiguousarray(image.transpose(2, 1, 0)),
                    label=np.ascontiguousarray(label.transpose(2, 1, 0)))
        return [f"wrong axis order in {path}: image shape (88, ", "on axis 0", "(X, Y, Z)"]
    if defect == "axis_order_depth_first":  # 20 slices (the shortest axis), stored first
        _h5_rewrite(path, image=np.ascontiguousarray(image[:, :, 34:54].transpose(2, 0, 1)),
                    label=np.ascontiguousarray(label[:, :, 34:54].transpose(2, 0, 1)))
        return [f"wrong axis order in {path}", "(20 slices) on axis 0"]
    if defect == "file_is_directory":
        _make_directory(path)
        return [f"1 listed case(s) not usable: {path} is a directory, not a file"]
    if defect == "unknown_id":
        write_lines(splits / "train.list", LA_TRAIN + ["NOT_A_CASE"])
        return ["1 listed case(s) missing", "NOT_A_CASE (train.list)"]
    raise AssertionError(defect)


def _info(folder: Path) -> dict[str, str]:
    return dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines())


def _acdc_frames(work: Path, patient: str) -> tuple[Path, Path, Path, Path]:
    folder = work / "training" / patient
    info = dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines())
    ed, es = folder / f"{patient}_frame{int(info['ED']):02d}", folder / f"{patient}_frame{int(info['ES']):02d}"
    return Path(f"{ed}.nii.gz"), Path(f"{ed}_gt.nii.gz"), Path(f"{es}.nii.gz"), Path(f"{es}_gt.nii.gz")


def _write_nii(array, path, spacing, origin=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), useCompression=True)


def _break_acdc_raw(work: Path, splits: Path, defect: str):
    patient = ACDC_TRAIN[0].split("_")[0]
    folder = work / "training" / patient
    ed_img, ed_gt, es_img, es_gt = _acdc_frames(work, patient)
    label, spacing = _read(es_gt)
    image, _ = _read(es_img)
    if defect == "missing_cases":
        for p in ("patient001", "patient050"):
            shutil.rmtree(work / "training" / p)
        return ["2 listed case(s) missing", "patient001", "patient050"]
    if defect == "missing_ed":
        ed_img.unlink()
        return [f"missing ED frame image for case {patient}_frame01: {ed_img}"]
    if defect == "missing_es_gt":
        es_gt.unlink()
        return [f"missing ES frame label for case {patient}_frame02: {es_gt}"]
    if defect == "info_line":
        (folder / "Info.cfg").write_text("ED 1\nES: 11\n")
        return [f"malformed Info.cfg {folder / 'Info.cfg'}: line 1 is not 'KEY: value'"]
    if defect == "info_missing_es":
        (folder / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
        return [f"malformed Info.cfg {folder / 'Info.cfg'}: key 'ES' missing"]
    if defect == "info_not_int":
        (folder / "Info.cfg").write_text("ED: 1\nES: twelve\n")
        return [f"malformed Info.cfg {folder / 'Info.cfg'}: ES is not an integer"]
    if defect == "missing_info":
        (folder / "Info.cfg").unlink()
        return [f"missing Info.cfg: {folder / 'Info.cfg'}"]
    if defect == "truncated":
        _truncate(es_img)
        return [f"unreadable or truncated image file {es_img}"]
    if defect == "label_dtype":
        _write_nii(label.astype(np.float32), es_gt, spacing)
        return [f"wrong dtype in {es_gt}: the label is float32, expected an integer type"]
    if defect == "shape":
        _write_nii(np.ascontiguousarray(label[:, 1:, :]), es_gt, spacing)
        return ["shape mismatch", str(es_gt)]
    if defect == "geometry":
        _write_nii(label, es_gt, (spacing[0], spacing[1], spacing[2] * 2))
        return ["geometry mismatch", str(es_gt)]
    if defect == "origin":
        _write_nii(label, es_gt, spacing, origin=(0.0, 0.0, spacing[2]))
        return [f"geometry mismatch: image {es_img} has origin (0, 0, 0) but label {es_gt} has origin (0, 0, "]
    if defect == "info_fraction":  # not frame 2 of the old int(float()) parse
        ed = int(_info(folder)["ED"])
        (folder / "Info.cfg").write_text(f"ED: {ed}.7\nES: {_info(folder)['ES']}\nNbFrame: 30\n")
        return [f"malformed Info.cfg {folder / 'Info.cfg'}: ED is not an integer frame number: '{ed}.7'"]
    if defect == "info_ed_equals_es":
        es = _info(folder)["ES"]
        (folder / "Info.cfg").write_text(f"ED: {es}\nES: {es}\nNbFrame: 30\n")
        return [f"malformed Info.cfg {folder / 'Info.cfg'}: ED and ES are the same frame ({es})"]
    if defect == "info_frame_not_there":  # within NbFrame, but no such frame file
        (folder / "Info.cfg").write_text(f"ED: 29\nES: {_info(folder)['ES']}\nNbFrame: 30\n")
        return [f"missing ED frame image for case {patient}_frame01: {folder / f'{patient}_frame29.nii.gz'}"]
    if defect == "info_is_directory":
        _make_directory(folder / "Info.cfg")
        return [f"bad Info.cfg: {folder / 'Info.cfg'} is a directory, not a file"]
    if defect == "frame_symlink_loop":
        _make_loop(ed_gt)
        return [f"bad ED frame label for case {patient}_frame01: {ed_gt} is a symlink loop"]
    if defect == "dot_slash_overlap":
        write_lines(splits / "test.list", read_list(splits / "test.list") + [f"./{ACDC_TRAIN[1]}"])
        return ["split lists 'train' and 'test' overlap (1)", ACDC_TRAIN[1]]
    if defect == "unknown_id":  # patient101..150 are the challenge's test patients, not in the training set
        write_lines(splits / "val.list", read_list(splits / "val.list") + ["patient150_frame01"])
        return ["1 listed case(s) missing under", "(patient folder): patient150 (val.list)"]
    if defect == "label_values":
        _write_nii(np.where(label == 3, 4, label).astype(label.dtype), es_gt, spacing)
        return [f"label file {es_gt} has values outside {{0, 1, 2, 3}}: 4"]
    if defect == "empty_label":
        _write_nii(np.zeros_like(label), es_gt, spacing)
        return [f"label file {es_gt} is empty"]
    if defect == "nan_image":
        bad = image.astype(np.float32)
        bad[0, 0, 0] = np.nan
        _write_nii(bad, es_img, spacing)
        return [f"image file {es_img} contains NaN"]
    if defect == "constant_image":
        _write_nii(np.full_like(image, 100), es_img, spacing)
        return [f"image file {es_img} is constant"]
    if defect == "overlap":
        val = read_list(splits / "val.list")
        write_lines(splits / "val.list", val + ["patient099_frame02"])
        return ["overlap", "patient099_frame02"]
    raise AssertionError(defect)


def _break_acdc_pre(work: Path, splits: Path, defect: str):
    data = work / "data"
    vol = data / f"{ACDC_TRAIN[0]}.h5"
    sl = data / "slices" / f"{ACDC_TRAIN[0]}_slice_2.h5"
    image, label = _h5(vol, "image"), _h5(vol, "label")
    if defect == "missing_cases":  # a test and a val volume (training volumes are optional)
        (data / "patient001_frame01.h5").unlink()
        (data / "patient028_frame02.h5").unlink()
        return ["2 listed val/test volume(s) missing", "patient001_frame01", "patient028_frame02"]
    if defect == "missing_train_volume_and_slices":
        vol.unlink()
        for path in (data / "slices").glob(f"{ACDC_TRAIN[0]}_slice_*.h5"):
            path.unlink()
        (splits / "train_slices.list").unlink()
        return ["1 train.list volume(s) have neither", ACDC_TRAIN[0]]
    if defect == "volume_without_slices":
        slices = read_list(splits / "train_slices.list")
        write_lines(splits / "train_slices.list", [s for s in slices if not s.startswith(f"{ACDC_TRAIN[3]}_")])
        return ["1 train.list volume(s) have no slice in train_slices.list", ACDC_TRAIN[3]]
    if defect == "slice_label_differs":
        other = _h5(sl, "label").copy()
        other[other == 0] = 1
        _h5_rewrite(sl, label=other)
        return [f"slice {sl} has a label that differs from slice 2 of its volume's label"]
    if defect == "slice_image_differs":
        _h5_rewrite(sl, image=(_h5(sl, "image") * 0.5).astype(np.float32))
        return [f"slice {sl} has an image that differs from slice 2 of its volume's image"]
    if defect == "missing_slices":
        (data / "slices" / f"{ACDC_TRAIN[0]}_slice_1.h5").unlink()
        (data / "slices" / f"{ACDC_TRAIN[5]}_slice_3.h5").unlink()
        return [f"{ACDC_TRAIN[0]}_slice_1", f"{ACDC_TRAIN[5]}_slice_3", "2 listed slice(s) missing"]
    if defect == "truncated":
        _truncate(vol)
        return [f"unreadable or truncated h5 file {vol}"]
    if defect == "image_dtype":
        _h5_rewrite(sl, image=_h5(sl, "image").astype(np.float64))
        return [f"wrong dtype in {sl}: dataset 'image' is float64, expected float32"]
    if defect == "label_dtype":
        _h5_rewrite(vol, label=label.astype(np.float32))
        return [f"wrong dtype in {vol}: dataset 'label' is float32, expected uint8"]
    if defect == "shape":
        _h5_rewrite(vol, label=np.ascontiguousarray(label[:, 1:]))
        return [f"shape mismatch in {vol}"]
    if defect == "slice_shape":
        _h5_rewrite(sl, image=_h5(sl, "image")[1:], label=_h5(sl, "label")[1:])
        return ["shape mismatch", str(sl), str(vol)]
    if defect == "label_values":
        _h5_rewrite(vol, label=np.where(label == 1, 5, label).astype(np.uint8))
        return [f"label file {vol} has values outside {{0, 1, 2, 3}}: 5"]
    if defect == "slice_label_values":
        _h5_rewrite(sl, label=np.full_like(_h5(sl, "label"), 7))
        return [f"label file {sl} has values outside {{0, 1, 2, 3}}: 7"]
    if defect == "empty_label":
        _h5_rewrite(vol, label=np.zeros_like(label))
        return [f"label file {vol} is empty"]
    if defect == "nan_image":
        bad = _h5(sl, "image").copy()
        bad[0, 0] = np.nan
        _h5_rewrite(sl, image=bad)
        return [f"image file {sl} contains NaN"]
    if defect == "constant_image":
        _h5_rewrite(vol, image=np.ones_like(image))
        return [f"image file {vol} is constant"]
    if defect == "slice_beyond_depth":
        slices = read_list(splits / "train_slices.list")
        write_lines(splits / "train_slices.list", slices + [f"{ACDC_TRAIN[0]}_slice_{image.shape[0] + 1}"])
        return ["slice indices beyond the volume depth", f"{ACDC_TRAIN[0]}_slice_{image.shape[0] + 1}"]
    if defect == "overlap":
        test = read_list(splits / "test.list")
        write_lines(splits / "test.list", test + [ACDC_TRAIN[1]])
        return ["overlap", ACDC_TRAIN[1]]
    if defect == "dot_slash_overlap":
        write_lines(splits / "val.list", read_list(splits / "val.list") + [f"./{ACDC_TRAIN[1]}/"])
        return ["split lists 'train' and 'val' overlap (1)", ACDC_TRAIN[1]]
    if defect == "unnormalised":
        _h5_rewrite(vol, image=(image * 700).astype(np.float32))
        return [f"implausible intensities in {vol}: image values span [0, 700]", "normalised to [0, 1]",
                "datasets.ACDC.preprocessing.check_intensity: false"]
    if defect == "slice_unnormalised":
        _h5_rewrite(sl, image=(_h5(sl, "image") - 0.5).astype(np.float32))
        return [f"implausible intensities in {sl}: image values span [-"]
    if defect == "slice_is_directory":
        _make_directory(sl)
        return [f"1 listed slice(s) not usable: {sl} is a directory, not a file"]
    if defect == "volume_symlink_loop":
        _make_loop(data / "patient001_frame01.h5")
        return [f"{data / 'patient001_frame01.h5'} is a symlink loop"]
    if defect == "unknown_id":
        write_lines(splits / "test.list", read_list(splits / "test.list") + ["patient150_frame02"])
        return ["1 listed val/test volume(s) missing", "patient150_frame02 (test.list)"]
    raise AssertionError(defect)


BREAKERS = {("LA", "raw"): _break_la_raw, ("LA", "preprocessed"): _break_la_pre,
            ("ACDC", "raw"): _break_acdc_raw, ("ACDC", "preprocessed"): _break_acdc_pre}
DEFECTS = [
    *[("LA", "raw", d) for d in ("missing_cases", "missing_label", "truncated", "label_dtype", "image_dtype",
                                 "shape", "geometry", "label_values", "empty_label", "nan_image", "constant_image",
                                 "overlap")],
    *[("LA", "preprocessed", d) for d in ("missing_cases", "truncated", "missing_dataset", "image_dtype",
                                          "label_dtype", "ndim", "shape", "label_values", "empty_label",
                                          "nan_image", "constant_image", "overlap")],
    *[("ACDC", "raw", d) for d in ("missing_cases", "missing_ed", "missing_es_gt", "info_line", "info_missing_es",
                                   "info_not_int", "missing_info", "truncated", "label_dtype", "shape", "geometry",
                                   "label_values", "empty_label", "nan_image", "constant_image", "overlap")],
    *[("ACDC", "preprocessed", d) for d in ("missing_cases", "missing_train_volume_and_slices",
                                            "volume_without_slices", "slice_label_differs", "slice_image_differs",
                                            "missing_slices", "truncated", "image_dtype",
                                            "label_dtype", "shape", "slice_shape", "label_values",
                                            "slice_label_values", "empty_label", "nan_image", "constant_image",
                                            "slice_beyond_depth", "overlap")],
]
# The stricter checks (issue 14): geometry fields, normalised split IDs, unknown IDs with their list,
# release intensities and LA axis order, Info.cfg frame numbers, directories and symlink loops.
STRICT_DEFECTS = [
    *[("LA", "raw", d) for d in ("origin", "direction", "label_is_directory", "image_symlink_loop",
                                 "case_symlink_loop", "dot_slash_overlap", "trailing_slash_duplicate", "path_entry",
                                 "unknown_id")],
    *[("LA", "preprocessed", d) for d in ("dot_slash_overlap", "unnormalised", "min_max_scaled", "axis_order_zyx",
                                          "axis_order_depth_first", "file_is_directory", "unknown_id")],
    *[("ACDC", "raw", d) for d in ("origin", "info_fraction", "info_ed_equals_es", "info_frame_not_there",
                                   "info_is_directory", "frame_symlink_loop", "dot_slash_overlap", "unknown_id")],
    *[("ACDC", "preprocessed", d) for d in ("dot_slash_overlap", "unnormalised", "slice_unnormalised",
                                            "slice_is_directory", "volume_symlink_loop", "unknown_id")],
]
DEFECTS += STRICT_DEFECTS


@pytest.mark.parametrize("dataset,kind,defect", DEFECTS, ids=["-".join(d) for d in DEFECTS])
def test_bad_input_is_reported_and_nothing_written(layouts, tmp_path, dataset, kind, defect):
    work, splits = _work(layouts, dataset, kind, tmp_path)
    expected = BREAKERS[dataset, kind](work, splits, defect)
    out = tmp_path / "results" / "preprocessed" / dataset
    with pytest.raises(DataError) as err:
        _run(dataset, kind, work, splits, out)
    message = str(err.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message  # one line
    assert not out.exists()
    assert not list(out.parent.glob(f".{dataset}.*"))  # no temporary folder left behind


# --------------------------------------------------------------------------- tolerated, not errors
def test_messy_split_lists_read_as_the_clean_ones(layouts, tmp_path):
    """BOMs, CRLF, surrounding whitespace, ./ and trailing / are normalised before any comparison."""
    work, splits = _work(layouts, "LA", "preprocessed", tmp_path)
    messy = ["\ufeff" + LA_TRAIN[0]] + [f"./{c}" for c in LA_TRAIN[1:40]] + [f"  {c}/ " for c in LA_TRAIN[40:]]
    (splits / "train.list").write_bytes(("\r\n".join(messy) + "\r\n\r\n").encode("utf-8"))
    (splits / "test.list").write_bytes(("\ufeff" + "\r\n".join(f".\\{c}" for c in LA_TEST)).encode("utf-8"))
    out = tmp_path / "out"
    summary = _run("LA", "preprocessed", work, splits, out)
    assert summary["cases"] == 100 and summary["splits"] == {"train": 80, "test": 20}
    assert (out / "splits" / "train.list").read_text() == "".join(f"{c}\n" for c in LA_TRAIN)
    assert (out / "splits" / "test.list").read_text() == "".join(f"{c}\n" for c in LA_TEST)
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(f"{c}.h5" for c in LA_TRAIN + LA_TEST)


def test_info_cfg_with_bom_and_crlf(layouts, tmp_path):
    work, splits = _work(layouts, "ACDC", "raw", tmp_path)
    folder = work / "training" / "patient090"
    text = (folder / "Info.cfg").read_text()
    (folder / "Info.cfg").write_bytes(("\ufeff" + text.replace("\n", "\r\n")).encode("utf-8"))
    out = tmp_path / "out"
    _run("ACDC", "raw", work, splits, out)
    rows = read_manifest(out / "manifest.csv")
    row = next(r for r in rows if r["input"].endswith("patient090_frame04.nii.gz"))  # ED: 4 read despite the BOM
    assert row["outputs"][0] == "volumes/patient090_frame01.h5"


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_check_intensity_false_accepts_other_intensities(layouts, tmp_path, dataset):
    work, splits = _work(layouts, dataset, "preprocessed", tmp_path)
    if dataset == "LA":
        path = work / "2018LA_Seg_Training Set" / LA_TEST[0] / "mri_norm2.h5"
    else:  # a test volume: no training slice to compare it with
        path = work / "data" / "patient001_frame01.h5"
    _h5_rewrite(path, image=(_h5(path, "image") * 300 + 20).astype(np.float32))
    with pytest.raises(DataError, match=f"implausible intensities in {path}"):
        _run(dataset, "preprocessed", work, splits, tmp_path / "strict")
    out = tmp_path / "out"
    preprocess_dataset(dataset, work, splits, out, params={"check_intensity": False}, source="preprocessed")
    imported = out / ("cases" if dataset == "LA" else "volumes") / (
        f"{LA_TEST[0]}.h5" if dataset == "LA" else "patient001_frame01.h5")
    assert sha256_file(imported) == sha256_file(path)


# --------------------------------------------------------------------------- raw_dir holding another layout
def _ids_named(message: str) -> int:
    """How many official LA or ACDC IDs a message names."""
    return sum(message.count(c) for c in LA_TRAIN + LA_TEST) + len(re.findall(r"patient\d{3}", message))


LAYOUT_CASES = [  # (config dataset, config source, folder given as raw_dir, fragments of the one-line message)
    ("LA", "raw", "ACDC/raw", ["holds the ACDC raw layout (training/patient*/Info.cfg: patient001, ",
                               "not the LA raw layout that datasets.LA.source: raw reads (none of the 100 listed cases",
                               "Training Set/<case ID>/lgemri.nrrd"]),
    ("LA", "preprocessed", "ACDC/preprocessed", ["holds the ACDC preprocessed layout (data/patient*_frame0?.h5: ",
                                                 "not the LA preprocessed layout"]),
    ("ACDC", "raw", "LA/raw", ["holds the LA raw layout (Training Set/*/lgemri.nrrd: ",
                               "none of the 100 listed patients is there", "training/patientNNN/"]),
    ("ACDC", "preprocessed", "LA/preprocessed", ["holds the LA preprocessed layout (2018LA_Seg_Training Set/",
                                                 "none of the 200 listed volumes is there"]),
    ("ACDC", "preprocessed", "ACDC/raw", ["holds the ACDC raw layout", "set datasets.ACDC.source: raw"]),
    ("LA", "raw", "LA/preprocessed", ["holds the LA preprocessed layout", "set datasets.LA.source: preprocessed"]),
    ("LA", "raw", "LA", ["holds the LA raw layout one folder down, in 'raw'", "set raw_dir to"]),
    ("ACDC", "raw", "empty", ["holds no recognisable ACDC or LA release (none of the 100 listed patients is there; "
                              "it is empty)"]),
    ("LA", "preprocessed", "junk", ["holds no recognisable ACDC or LA release", "it holds 12 entries (",
                                    "... (+7 more)"]),
]


@pytest.mark.parametrize("dataset,source,folder,expected", LAYOUT_CASES,
                         ids=[f"{d}-{s}-in-{f.replace('/', '-')}" for d, s, f, _ in LAYOUT_CASES])
def test_raw_dir_with_another_layout_says_so(layouts, tmp_path, dataset, source, folder, expected):
    raw_dir = layouts / folder
    if folder == "empty":
        raw_dir = tmp_path / "empty"
        raw_dir.mkdir()
    elif folder == "junk":
        raw_dir = tmp_path / "junk"
        raw_dir.mkdir()
        for i in range(12):
            (raw_dir / f"file{i:02d}.txt").write_text("x")
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        _run(dataset, source, raw_dir, OFFICIAL / dataset, out)
    message = str(err.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message and "missing" not in message
    assert _ids_named(message) <= 5, message
    assert not out.exists()
