"""Import the widely shared *preprocessed* LA and ACDC releases (protocol section 1).

Input layouts (``raw_dir`` may point at the folder shown or at its parent):

- LA: ``<raw_dir>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` with ``image`` float32 (X, Y, 88)
  and ``label`` uint8 {0, 1} (already z-scored and cropped by the reference script).
- ACDC: ``<raw_dir>/data/<vol>.h5`` (whole volumes, ``image`` float32 (Z, H, W) in [0, 1],
  ``label`` uint8 {0..3}) and ``<raw_dir>/data/slices/<vol>_slice_K.h5`` (one 2D slice, K 1-based);
  ``frame01`` = ED, ``frame02`` = ES. The training volumes may be absent (the release as it circulates
  with the reference code ships the training slices and the val/test volumes only).

Output: the layout :mod:`ssnet.data.preprocess` writes from raw archives (``cases/`` for LA;
``slices/`` and ``volumes/`` for ACDC, without a ``spacing`` attribute because the release does not
record it); :func:`ssnet.data.preprocess.preprocess_dataset` with ``source: preprocessed`` calls the
dataset's check and write steps (``validate_*`` and ``write_*`` here) and adds ``splits/``,
``preprocess.json`` and ``manifest.csv``. The listed files are checked first (missing cases,
unreadable/truncated files, dtype, dimensions, image/label shape, label values, empty label, NaN or
constant image, implausible intensities: LA not z-scored, ACDC outside [0, 1], unless the dataset's
``preprocessing.check_intensity`` is false; LA depth axis not last), then copied byte for byte, so an
imported file has the input's SHA-256. Files that are not listed (``desktop.ini``, unlisted volumes or
slices) are ignored.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ssnet.data import checks
from ssnet.data.provenance import Manifest
from ssnet.data.splits import acdc_slice_names, acdc_volumes, parse_acdc_volume
from ssnet.errors import DataError
from ssnet.jobs import warn

LA_RELEASE_FOLDER = "2018LA_Seg_Training Set"
LA_RELEASE_FILE = "mri_norm2.h5"
ACDC_RELEASE_FOLDER = "data"
IMAGE_DTYPES = ("float32",)
LABEL_DTYPES = ("uint8",)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths
def la_release_root(raw_dir: str | os.PathLike) -> Path:
    """``<raw>/2018LA_Seg_Training Set`` if present, else ``<raw>`` (the folder of case folders)."""
    raw_dir = Path(raw_dir)
    return raw_dir / LA_RELEASE_FOLDER if (raw_dir / LA_RELEASE_FOLDER).is_dir() else raw_dir


def la_release_path(root: Path, case_id: str) -> Path:
    return root / case_id / LA_RELEASE_FILE


def acdc_release_root(raw_dir: str | os.PathLike) -> Path:
    """``<raw>/data`` if present, else ``<raw>`` (the folder holding ``<vol>.h5`` and ``slices/``)."""
    raw_dir = Path(raw_dir)
    return raw_dir / ACDC_RELEASE_FOLDER if (raw_dir / ACDC_RELEASE_FOLDER).is_dir() else raw_dir


def acdc_volume_path(root: Path, volume: str) -> Path:
    return root / f"{volume}.h5"


def acdc_slice_path(root: Path, name: str) -> Path:
    return root / "slices" / f"{name}.h5"


# --------------------------------------------------------------------------- checks
def read_release_file(path: Path, ndim: int, label_values: Sequence[int], allow_empty: bool = False,
                      intensity: tuple[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one released h5 file (image float32, label uint8, same shape, values); with
    ``intensity`` = (normalisation, switch), also that the image looks normalised as that release is
    (:func:`ssnet.data.checks.check_intensity`)."""
    arrays = checks.read_h5(path)
    image, label = arrays["image"], arrays["label"]
    checks.check_dtype(image, path, "dataset 'image'", exact=IMAGE_DTYPES)
    checks.check_dtype(label, path, "dataset 'label'", exact=LABEL_DTYPES)
    checks.check_ndim(image, ndim, path, "dataset 'image'")
    checks.check_ndim(label, ndim, path, "dataset 'label'")
    if image.shape != label.shape:
        raise DataError(f"shape mismatch in {path}: image has shape {image.shape} but label has shape "
                        f"{label.shape}")
    checks.check_image_values(image, path)
    if intensity:
        checks.check_intensity(image, path, *intensity)
    checks.check_label_values(label, label_values, path, allow_empty=allow_empty)
    return image, label


def _missing(paths: Mapping[str, Path], root: Path, what: str, pattern: str,
             origin: Mapping[str, str] | None = None) -> None:
    """One DataError naming the listed files that are something else (a directory, a symlink loop),
    else every name whose file is absent (with its split list when ``origin`` is given)."""
    checks.require_paths(paths, "file", what, f"{what}(s) missing under {root} (no {pattern})", origin)


def _no_duplicates(names: Sequence[str], what: str) -> None:
    seen, dup = set(), []
    for name in names:
        if name in seen and name not in dup:
            dup.append(name)
        seen.add(name)
    if dup:
        raise DataError(f"{what} list has duplicates: {', '.join(dup)}")


# --------------------------------------------------------------------------- LA
def validate_la_release(root: Path, case_ids: Sequence[str], intensity_switch: str | None = None,
                        origin: Mapping[str, str] | None = None) -> list[str]:
    """Check every listed case (axis order (X, Y, Z); z-scored intensities when ``intensity_switch``, the
    config key turning that check off, is given); return warnings (z depth other than 88). ``origin``:
    case -> its split list, for messages."""
    _no_duplicates(case_ids, "LA case")
    paths = {cid: la_release_path(root, cid) for cid in case_ids}
    _missing(paths, root, "case", f"<ID>/{LA_RELEASE_FILE}", origin)
    warnings = []
    for cid, path in paths.items():
        image, _ = read_release_file(path, 3, checks.LA_RELEASE_LABEL_VALUES,
                                     intensity=("zscore", intensity_switch) if intensity_switch else None)
        checks.check_la_axis_order(image.shape, path)
        warning = checks.la_depth_warning(image.shape[2], path)
        if warning:
            warn(warning)
            warnings.append(warning)
    return warnings


def write_la_release(root: Path, case_ids: Sequence[str], out: Path, manifest: Manifest) -> int:
    """Copy every checked case to ``out/cases/<ID>.h5``; return the number of cases."""
    (out / "cases").mkdir(parents=True, exist_ok=True)
    for i, cid in enumerate(case_ids, 1):
        src = la_release_path(root, cid)
        shutil.copyfile(src, out / "cases" / f"{cid}.h5")
        manifest.add("release_case", cid, src, [f"cases/{cid}.h5"])
        _log(f"[LA {i}/{len(case_ids)}] {cid}: imported {src}")
    return len(case_ids)


# --------------------------------------------------------------------------- ACDC
def validate_acdc_release(root: Path, splits: dict[str, list[str]],
                          intensity_switch: str | None = None) -> dict[str, int]:
    """Check every listed volume and training slice; fills ``splits['train_slices']`` if absent.

    Val/test volumes must exist (they are evaluated). A train.list volume needs its slices only, as the
    reference loader reads nothing else: the release as it circulates ships training slices plus the
    val/test volumes. Its depth is the volume's when the volume is there, else the highest slice index
    found. Returns the depth per volume. Whole volumes must contain foreground; single slices may be
    empty (apex/base). A slice must have its volume's in-plane shape (all slices of a volume alike),
    K in 1..Z, and equal the volume's K-th slice when both are present. Images must lie in [0, 1]
    when ``intensity_switch`` (the config key turning that check off) is given.
    """
    intensity = ("unit_range", intensity_switch) if intensity_switch else None
    checks.check_splits_disjoint(splits)
    volumes = acdc_volumes(splits)
    for v in volumes:
        parse_acdc_volume(v)
    train = list(splits["train"])
    evaluated = [v for v in volumes if v not in set(train)]
    origin = {v: f"{name}.list" for name in ("test", "val", "train") for v in splits[name]}
    _missing({v: acdc_volume_path(root, v) for v in evaluated}, root, "val/test volume", "<vol>.h5", origin)
    present = [v for v in volumes if checks.path_problem(acdc_volume_path(root, v)) != "missing"]
    arrays = {v: read_release_file(acdc_volume_path(root, v), 3, checks.ACDC_LABEL_VALUES, intensity=intensity)
              for v in present}
    depth = {v: int(image.shape[0]) for v, (image, _) in arrays.items()}
    if "train_slices" not in splits:
        splits["train_slices"] = _acdc_train_slices(root, train, depth)
    slices = splits["train_slices"]
    _no_duplicates(slices, "train_slices")
    _check_slice_names(slices, train, depth)
    _missing({s: acdc_slice_path(root, s) for s in slices}, root / "slices", "slice", "<vol>_slice_K.h5")
    plane = {v: tuple(image.shape[1:]) for v, (image, _) in arrays.items()}
    for s in slices:
        path = acdc_slice_path(root, s)
        image, label = read_release_file(path, 2, checks.ACDC_LABEL_VALUES, allow_empty=True, intensity=intensity)
        volume, k = s.rsplit("_slice_", 1)
        first = plane.setdefault(volume, tuple(image.shape))
        if tuple(image.shape) != first:
            source = acdc_volume_path(root, volume) if volume in arrays else f"the other slices of {volume}"
            raise DataError(f"shape mismatch: slice {path} has shape {tuple(image.shape)} but {source} has "
                            f"slices of shape {first}")
        if volume in arrays:
            _check_slice_matches_volume(path, image, label, arrays[volume], int(k))
        depth[volume] = max(depth.get(volume, 0), int(k))
    return depth


def _acdc_train_slices(root: Path, train: Sequence[str], depth: Mapping[str, int]) -> list[str]:
    """Slice names of each training volume: 1..Z from its volume file, else the slice files found."""
    slices, without = [], []
    for v in train:
        if v in depth:
            slices += acdc_slice_names(v, depth[v])
            continue
        found = sorted((int(p.stem.rsplit("_slice_", 1)[1]) for p in (root / "slices").glob(f"{v}_slice_*.h5")
                        if p.stem.rsplit("_slice_", 1)[1].isdigit()))
        if not found:
            without.append(v)
        slices += [f"{v}_slice_{k}" for k in found]
    if without:
        raise DataError(f"{len(without)} train.list volume(s) have neither <vol>.h5 under {root} nor "
                        f"<vol>_slice_K.h5 under {root / 'slices'}: {', '.join(without[:10])}")
    return slices


def _check_slice_names(slices: Sequence[str], train: Sequence[str], depth: Mapping[str, int]) -> None:
    """Every slice belongs to a train.list volume, with K within the volume's depth when it is known."""
    train_set = set(train)
    outside, beyond = [], []
    for s in slices:
        volume, _, k = s.rpartition("_slice_")
        if volume not in train_set or not k.isdigit() or int(k) < 1:
            outside.append(s)
        elif volume in depth and int(k) > depth[volume]:
            beyond.append(s)
    if outside:
        raise DataError(f"train_slices.list names {len(outside)} slice(s) with volumes not in train.list: "
                        f"{', '.join(outside[:10])}")
    if beyond:
        raise DataError(f"train_slices.list names {len(beyond)} slice(s) with slice indices beyond the volume depth: "
                        f"{', '.join(beyond[:10])}")
    without = [v for v in train if v not in {s.rpartition("_slice_")[0] for s in slices}]
    if without:
        raise DataError(f"{len(without)} train.list volume(s) have no slice in train_slices.list: "
                        f"{', '.join(without[:10])}")


def _check_slice_matches_volume(path: Path, image: np.ndarray, label: np.ndarray,
                                volume: tuple[np.ndarray, np.ndarray], k: int) -> None:
    """Slice K (1-based) of a released volume and its released slice file hold the same image and label."""
    vol_image, vol_label = volume
    if not np.array_equal(label, vol_label[k - 1]):
        raise DataError(f"slice {path} has a label that differs from slice {k} of its volume's label")
    if not np.allclose(image, vol_image[k - 1], rtol=0, atol=1e-6):
        raise DataError(f"slice {path} has an image that differs from slice {k} of its volume's image")


def write_acdc_release(root: Path, splits: Mapping[str, Sequence[str]], out: Path,
                       manifest: Manifest) -> dict[str, int]:
    """Copy every listed volume that is present (val/test ones always are) to ``out/volumes/`` and every
    training slice to ``out/slices/``."""
    (out / "slices").mkdir(parents=True, exist_ok=True)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    volumes = [v for v in acdc_volumes(splits) if acdc_volume_path(root, v).is_file()]
    for i, v in enumerate(volumes, 1):
        src = acdc_volume_path(root, v)
        shutil.copyfile(src, out / "volumes" / f"{v}.h5")
        manifest.add("release_volume", v, src, [f"volumes/{v}.h5"])
        _log(f"[ACDC {i}/{len(volumes)}] {v}: imported {src}")
    for s in splits["train_slices"]:
        src = acdc_slice_path(root, s)
        shutil.copyfile(src, out / "slices" / f"{s}.h5")
        manifest.add("release_slice", s, src, [f"slices/{s}.h5"])
    _log(f"[ACDC] imported {len(splits['train_slices'])} training slices")
    return {"volumes": len(volumes), "slices": len(splits["train_slices"])}
