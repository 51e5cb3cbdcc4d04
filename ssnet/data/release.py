"""Import the widely shared *preprocessed* LA and ACDC releases (protocol section 1).

Input layouts (``raw_dir`` may point at the folder shown or at its parent):

- LA: ``<raw_dir>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` with ``image`` float32 (X, Y, 88)
  and ``label`` uint8 {0, 1} (already z-scored and cropped by the reference script).
- ACDC: ``<raw_dir>/data/<vol>.h5`` (whole volumes, ``image`` float32 (Z, H, W) in [0, 1],
  ``label`` uint8 {0..3}) and ``<raw_dir>/data/slices/<vol>_slice_K.h5`` (one 2D slice, K 1-based);
  ``frame01`` = ED, ``frame02`` = ES.

Output: the layout :mod:`ssnet.data.preprocess` writes from raw archives (``cases/`` for LA;
``slices/`` and ``volumes/`` for ACDC, without a ``spacing`` attribute because the release does not
record it); :func:`ssnet.data.preprocess.preprocess_dataset` with ``source: preprocessed`` calls the
dataset's check and write steps (``validate_*`` and ``write_*`` here) and adds ``splits/``,
``preprocess.json`` and ``manifest.csv``. The listed files are checked first (missing cases,
unreadable/truncated files, dtype, dimensions, image/label shape, label values, empty label, NaN or
constant image), then copied byte for byte, so an imported file has the input's SHA-256. Files that
are not listed (``desktop.ini``, unlisted volumes or slices) are ignored.
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
def read_release_file(path: Path, ndim: int, label_values: Sequence[int],
                      allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one released h5 file (image float32, label uint8, same shape, values)."""
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
    checks.check_label_values(label, label_values, path, allow_empty=allow_empty)
    return image, label


def _missing(paths: Mapping[str, Path], root: Path, what: str, pattern: str) -> None:
    """One DataError listing every name whose file is absent."""
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} listed {what}(s) missing under {root} (no {pattern}): "
                        + ", ".join(missing))


def _no_duplicates(names: Sequence[str], what: str) -> None:
    seen, dup = set(), []
    for name in names:
        if name in seen and name not in dup:
            dup.append(name)
        seen.add(name)
    if dup:
        raise DataError(f"{what} list has duplicates: {', '.join(dup)}")


# --------------------------------------------------------------------------- LA
def validate_la_release(root: Path, case_ids: Sequence[str]) -> list[str]:
    """Check every listed case; return warnings (z depth other than 88)."""
    _no_duplicates(case_ids, "LA case")
    paths = {cid: la_release_path(root, cid) for cid in case_ids}
    _missing(paths, root, "case", f"<ID>/{LA_RELEASE_FILE}")
    warnings = []
    for cid, path in paths.items():
        image, _ = read_release_file(path, 3, checks.LA_RELEASE_LABEL_VALUES)
        warning = checks.la_depth_warning(image.shape[2], path)
        if warning:
            _log(warning)
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
def validate_acdc_release(root: Path, splits: dict[str, list[str]]) -> dict[str, int]:
    """Check every listed volume and training slice; fills ``splits['train_slices']`` if absent.

    Returns the slice count per volume. Whole volumes must contain foreground; single slices may be
    empty (apex/base). A slice must have its volume's in-plane shape and K in 1..Z.
    """
    checks.check_splits_disjoint(splits)
    volumes = acdc_volumes(splits)
    for v in volumes:
        parse_acdc_volume(v)
    _missing({v: acdc_volume_path(root, v) for v in volumes}, root, "volume", "<vol>.h5")
    depth, plane = {}, {}
    for v in volumes:
        image, _ = read_release_file(acdc_volume_path(root, v), 3, checks.ACDC_LABEL_VALUES)
        depth[v], plane[v] = int(image.shape[0]), tuple(image.shape[1:])
    train = list(splits["train"])
    if "train_slices" not in splits:
        splits["train_slices"] = [s for v in train for s in acdc_slice_names(v, depth[v])]
    slices = splits["train_slices"]
    _no_duplicates(slices, "train_slices")
    expected = {s for v in train for s in acdc_slice_names(v, depth[v])}
    bad = [s for s in slices if s not in expected]
    if bad:
        outside = [s for s in bad if s.rsplit("_slice_", 1)[0] not in set(train)]
        what = "volumes not in train.list" if outside else "slice indices beyond the volume depth"
        raise DataError(f"train_slices.list names {len(bad)} slice(s) with {what}: {', '.join(bad[:10])}")
    _missing({s: acdc_slice_path(root, s) for s in slices}, root / "slices", "slice", "<vol>_slice_K.h5")
    for s in slices:
        path = acdc_slice_path(root, s)
        image, _ = read_release_file(path, 2, checks.ACDC_LABEL_VALUES, allow_empty=True)
        volume = s.rsplit("_slice_", 1)[0]
        if tuple(image.shape) != plane[volume]:
            raise DataError(f"shape mismatch: slice {path} has shape {tuple(image.shape)} but its volume "
                            f"{acdc_volume_path(root, volume)} has slices of shape {plane[volume]}")
    return depth


def write_acdc_release(root: Path, splits: Mapping[str, Sequence[str]], out: Path,
                       manifest: Manifest) -> dict[str, int]:
    """Copy every listed volume to ``out/volumes/`` and every training slice to ``out/slices/``."""
    (out / "slices").mkdir(parents=True, exist_ok=True)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    volumes = acdc_volumes(splits)
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
