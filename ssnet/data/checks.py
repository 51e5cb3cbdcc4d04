"""Input checks for the raw datasets and the preprocessed files.

Every check raises :class:`ssnet.errors.DataError` with one message that names the offending
file or case, so the person running the pipeline can fix the input without a traceback.
The preprocessing entry points run all of these checks before anything is written.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ssnet.errors import DataError

LA_LABEL_VALUES = (0, 255)
LA_RELEASE_LABEL_VALUES = (0, 1)
ACDC_LABEL_VALUES = (0, 1, 2, 3)
LA_DEPTH = 88  # every real LA volume has 88 slices (z); another depth is a warning, not an error
INFO_CFG_INT_KEYS = ("ED", "ES")


# --------------------------------------------------------------------------- files
def require_file(path: str | os.PathLike, what: str = "file", case: str | None = None) -> Path:
    """Raise DataError when ``path`` is not an existing regular file."""
    path = Path(path)
    if not path.is_file():
        where = f" for case {case}" if case else ""
        raise DataError(f"missing {what}{where}: {path}")
    return path


def require_cases(root: str | os.PathLike, case_ids: Sequence[str], what: str = "case folder") -> None:
    """Raise one DataError listing every listed case whose folder is absent under ``root``."""
    root = Path(root)
    missing = [c for c in case_ids if not (root / c).is_dir()]
    if missing:
        raise DataError(
            f"{len(missing)} listed case(s) missing under {root} ({what}): " + ", ".join(missing)
        )


def read_image(path: str | os.PathLike, dimension: int = 3):
    """Read a medical image with SimpleITK, wrapping every reader error into a DataError.

    Returns ``(array, spacing_xyz, size_xyz)`` with the SimpleITK array order (z, y, x).
    """
    import SimpleITK as sitk

    path = require_file(path)
    if path.name.endswith(".gz"):
        _check_gzip(path)
    try:
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
    except Exception as exc:  # SimpleITK raises RuntimeError with a long ITK trace
        raise DataError(f"unreadable or truncated image file {path}: {_itk_reason(exc)}") from None
    if image.GetDimension() != dimension:
        raise DataError(f"{path}: expected a {dimension}D image, got {image.GetDimension()}D")
    if np.issubdtype(array.dtype, np.floating) and path.name.endswith((".nii", ".nii.gz")):
        _check_nifti_finite(path)
    return array, tuple(float(s) for s in image.GetSpacing()), tuple(int(s) for s in image.GetSize())


def _itk_reason(exc: Exception) -> str:
    """The informative last lines of an ITK exception (not the C++ source location)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    return (" | ".join(lines[-2:]) if lines else type(exc).__name__)[:400]


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI-1 datatype codes


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader silently turns NaN/inf voxels into 0: look at the stored floats instead."""
    import gzip

    data = gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
    if len(data) < 348:
        return
    order = "<" if np.frombuffer(data[:4], "<i4")[0] == 348 else ">"
    dims = np.frombuffer(data[40:56], f"{order}i2")
    code = int(np.frombuffer(data[70:72], f"{order}i2")[0])
    offset = int(np.frombuffer(data[108:112], f"{order}f4")[0])
    if code not in _NIFTI_FLOATS:
        return
    count = int(np.prod(dims[1:1 + max(int(dims[0]), 0)], dtype=np.int64))
    voxels = np.frombuffer(data, f"{order}{_NIFTI_FLOATS[code]}", count=count, offset=offset)
    if not np.all(np.isfinite(voxels)):
        raise DataError(f"image file {path} contains NaN or infinite values")


def _check_gzip(path: Path) -> None:
    """ITK's NIfTI reader silently accepts a truncated .gz: decompress it fully to be sure."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"unreadable or truncated image file {path}: {exc}") from None


def read_h5(path: str | os.PathLike, keys: Iterable[str] = ("image", "label")) -> dict[str, np.ndarray]:
    """Read datasets from an h5 file, naming the file in any error (missing, unreadable, key absent)."""
    import h5py

    path = require_file(path, "h5 file")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:
            for key in keys:
                if key not in handle:
                    raise DataError(f"{path}: dataset '{key}' missing (has {sorted(handle.keys())})")
                out[key] = handle[key][()]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"unreadable or truncated h5 file {path}: {exc}") from None
    return out


# --------------------------------------------------------------------------- arrays
def check_dtype(array: np.ndarray, path, what: str, exact: Sequence[str] = (), kind: str | None = None) -> None:
    """The array's dtype must be one of ``exact`` (numpy names) or, with ``kind``, of that family.

    ``kind``: ``"integer"`` (signed/unsigned integers) or ``"real"`` (integers or floats; no bool,
    complex or structured types).
    """
    dtype = np.dtype(array.dtype)
    if exact:
        ok = dtype.name in exact
        expected = " or ".join(exact)
    elif kind == "integer":
        ok = dtype.kind in "iu"
        expected = "an integer type"
    elif kind == "real":
        ok = dtype.kind in "iuf"
        expected = "an integer or floating-point type"
    else:
        raise ValueError("check_dtype needs exact dtypes or a kind")
    if not ok:
        raise DataError(f"wrong dtype in {path}: {what} is {dtype.name}, expected {expected}")


def check_ndim(array: np.ndarray, ndim: int, path, what: str) -> None:
    """The array must have ``ndim`` dimensions."""
    if array.ndim != ndim:
        raise DataError(f"{path}: {what} must be {ndim}D, got shape {tuple(array.shape)}")


def la_depth_warning(depth: int, path) -> str | None:
    """The warning text when an LA volume does not have the usual 88 slices (None when it has)."""
    if int(depth) != LA_DEPTH:
        return f"WARNING: {path} has {int(depth)} slices along z; real LA volumes have {LA_DEPTH}"
    return None


def check_same_geometry(image_path, label_path, image_shape, label_shape,
                        image_spacing=None, label_spacing=None) -> None:
    """Image and label must have the same shape (and spacing, when given)."""
    if tuple(image_shape) != tuple(label_shape):
        raise DataError(
            f"shape mismatch: image {image_path} has shape {tuple(image_shape)} but label "
            f"{label_path} has shape {tuple(label_shape)}"
        )
    if image_spacing is not None and label_spacing is not None:
        if not np.allclose(image_spacing, label_spacing, rtol=1e-4, atol=1e-5):
            raise DataError(
                f"geometry mismatch: image {image_path} has spacing {tuple(image_spacing)} but label "
                f"{label_path} has spacing {tuple(label_spacing)}"
            )


def check_label_values(label: np.ndarray, allowed: Sequence[int], path, allow_empty: bool = False) -> np.ndarray:
    """Label values must lie in ``allowed`` and (unless ``allow_empty``) the label must not be empty.

    Returns the unique values. ``allow_empty`` is for single 2D slices (apex/base slices without
    structures are normal); whole volumes must contain foreground.
    """
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in set(allowed)]
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DataError(f"label file {path} has values outside {{{', '.join(map(str, allowed))}}}: {shown}")
    if not allow_empty and not np.any(values != 0):
        raise DataError(f"label file {path} is empty (no foreground voxel)")
    return values


def check_image_values(image: np.ndarray, path) -> None:
    """The image must be finite and not constant."""
    if image.size == 0:
        raise DataError(f"image file {path} is empty (size 0)")
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        raise DataError(f"image file {path} contains NaN or infinite values")
    if image.min() == image.max():
        raise DataError(f"image file {path} is constant (value {image.min()}); cannot normalise it")


# --------------------------------------------------------------------------- ACDC metadata
def parse_info_cfg(path: str | os.PathLike) -> dict[str, str | int]:
    """Parse an ACDC ``Info.cfg`` (``KEY: value`` lines); ED and ES must be positive integers."""
    path = require_file(path, "Info.cfg")
    info: dict[str, str | int] = {}
    try:
        text = path.read_text()
    except Exception as exc:
        raise DataError(f"unreadable Info.cfg {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(f"malformed Info.cfg {path}: line {n} is not 'KEY: value': {line!r}")
        key, value = line.split(":", 1)
        info[key.strip()] = value.strip()
    for key in INFO_CFG_INT_KEYS:
        if key not in info:
            raise DataError(f"malformed Info.cfg {path}: key '{key}' missing")
        try:
            info[key] = int(float(str(info[key])))
        except ValueError:
            raise DataError(f"malformed Info.cfg {path}: {key} is not an integer: {info[key]!r}") from None
        if info[key] < 1:
            raise DataError(f"malformed Info.cfg {path}: {key} must be >= 1, got {info[key]}")
    if "NbFrame" in info:
        try:
            nb = int(float(str(info["NbFrame"])))
        except ValueError:
            raise DataError(f"malformed Info.cfg {path}: NbFrame is not an integer") from None
        for key in INFO_CFG_INT_KEYS:
            if info[key] > nb:
                raise DataError(f"malformed Info.cfg {path}: {key}={info[key]} exceeds NbFrame={nb}")
    return info


# --------------------------------------------------------------------------- splits
def check_splits_disjoint(splits: Mapping[str, Sequence[str]],
                          ignore: Sequence[str] = ("train_slices", "all_slices")) -> None:
    """Split lists must not share entries; ACDC volume lists must not share patients either."""
    names = [k for k in splits if k not in ignore]
    for key in names:
        dup = sorted(x for x, c in Counter(splits[key]).items() if c > 1)
        if dup:
            raise DataError(f"split list '{key}' has duplicate entries: {', '.join(dup[:20])}")
    pat = re.compile(r"^(patient\d+)_frame\d+$")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(splits[a]) & set(splits[b]))
            if common:
                raise DataError(
                    f"split lists '{a}' and '{b}' overlap ({len(common)}): {', '.join(common[:20])}"
                )
            pa = {m.group(1) for x in splits[a] if (m := pat.match(x))}
            pb = {m.group(1) for x in splits[b] if (m := pat.match(x))}
            shared = sorted(pa & pb)
            if shared:
                raise DataError(
                    f"split lists '{a}' and '{b}' share patients ({len(shared)}): {', '.join(shared[:20])}"
                )
