"""Input checks for the raw datasets and the preprocessed files.

Every check raises :class:`ssnet.errors.DataError` with one message that names the offending
file or case, so the person running the pipeline can fix the input without a traceback.
The preprocessing entry points run all of these checks before anything is written.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from ssnet.errors import DataError

LA_LABEL_VALUES = (0, 255)
LA_RELEASE_LABEL_VALUES = (0, 1)
ACDC_LABEL_VALUES = (0, 1, 2, 3)
LA_DEPTH = 88  # every real LA volume has 88 slices (z); another depth is a warning, not an error
INFO_CFG_INT_KEYS = ("ED", "ES")
SHOWN_IDS = 20  # at most this many IDs in a "missing" message (then "... (+N more)")
LAYOUT_IDS = 5  # at most this many IDs when naming the layout a raw_dir holds instead

# Image/label geometry tolerances of the raw formats (NRRD, NIfTI store float32 headers).
SPACING_RTOL, SPACING_ATOL = 1e-4, 1e-5  # relative, and absolute in mm
ORIGIN_TOL_VOXELS = 0.01  # origins may differ by 1 % of the smallest voxel spacing
DIRECTION_ATOL = 1e-3  # direction cosines (about 0.06 degrees)

# Intensity plausibility of imported releases (source: preprocessed; switch: check_intensity).
LA_ZSCORE_MAX_ABS_MEAN = 3.0  # the reference z-scores the whole volume, then crops x/y around the atrium
LA_ZSCORE_STD_RANGE = (0.25, 5.0)
UNIT_RANGE_TOL = 1e-6  # ACDC images are min-max normalised to [0, 1]


# --------------------------------------------------------------------------- files
def path_problem(path: str | os.PathLike, want: str = "file") -> str | None:
    """What is wrong with ``path`` as a regular file (``want="file"``) or folder (``want="dir"``).

    None when it is one; ``"missing"`` when nothing is there; else what is there instead, in words:
    ``"is a directory, not a file"``, ``"is a file, not a folder"``, ``"is a symlink loop"`` (naming the
    looping component when it is a parent), ``"is a broken symlink (to ...)"``, ``"is not a regular file"``
    or ``"cannot be accessed (...)"``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            looping = _looping_component(path)
            return "is a symlink loop" if looping == path else f"is inside a symlink loop ({looping})"
        if os.path.islink(path):
            return f"is a broken symlink (to {os.readlink(path)})"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        return f"cannot be accessed ({exc.strerror})"
    if want == "dir":
        return None if stat.S_ISDIR(mode) else ("is a file, not a folder" if stat.S_ISREG(mode)
                                                else "is not a folder")
    if stat.S_ISREG(mode):
        return None
    return "is a directory, not a file" if stat.S_ISDIR(mode) else "is not a regular file"


def _looping_component(path: Path) -> Path:
    """The first component of ``path`` (from the root down) that cannot be resolved for a symlink loop."""
    for part in reversed([path, *path.parents]):
        try:
            os.stat(part)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return part
    return path


def require_file(path: str | os.PathLike, what: str = "file", case: str | None = None) -> Path:
    """Raise DataError when ``path`` is not an existing regular file (saying what is there instead)."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        where = f" for case {case}" if case else ""
        if problem == "missing":
            raise DataError(f"missing {what}{where}: {path}")
        raise DataError(f"bad {what}{where}: {path} {problem}")
    return path


def shown(names: Sequence[str], limit: int = SHOWN_IDS) -> str:
    """``a, b, c`` with at most ``limit`` names, then ``... (+N more)``."""
    names = list(names)
    text = ", ".join(names[:limit])
    return text + (f" ... (+{len(names) - limit} more)" if len(names) > limit else "")


def require_paths(paths: Mapping[str, Path], want: str, what: str, missing_text: str,
                  origin: Mapping[str, str] | None = None) -> None:
    """Every listed ``{name: path}`` is a regular file (``want="file"``) or folder (``"dir"``).

    One DataError: first the entries that exist but are something else (named with what is there:
    a directory, a symlink loop, ...), then the missing ones: ``"<n> listed <missing_text>: <names>"``,
    each name followed by the split list it comes from when ``origin`` (name -> list file) is given.
    """
    problems = {name: path_problem(path, want) for name, path in paths.items()}
    bad = [(name, paths[name], p) for name, p in problems.items() if p and p != "missing"]
    if bad:
        raise DataError(f"{len(bad)} listed {what}(s) not usable: "
                        + "; ".join(f"{path} {problem}" for _, path, problem in bad[:LAYOUT_IDS])
                        + (f" ... (+{len(bad) - LAYOUT_IDS} more)" if len(bad) > LAYOUT_IDS else ""))
    missing = [name for name, p in problems.items() if p == "missing"]
    if missing:
        named = [f"{n} ({origin[n]})" if origin and n in origin else n for n in missing]
        raise DataError(f"{len(missing)} listed {missing_text}: {shown(named)}")


def require_cases(root: str | os.PathLike, case_ids: Sequence[str], what: str = "case folder",
                  origin: Mapping[str, str] | None = None) -> None:
    """Raise one DataError listing every listed case whose folder is absent under ``root`` (or is a file,
    a symlink loop, ...); ``origin`` maps a case to its split list file, shown after its name."""
    root = Path(root)
    require_paths({c: root / c for c in case_ids}, "dir", what, f"case(s) missing under {root} ({what})", origin)


class Geometry(NamedTuple):
    """Physical geometry of an image, in SimpleITK (x, y, z) order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major direction cosine matrix


def read_image(path: str | os.PathLike, dimension: int = 3):
    """Read a medical image with SimpleITK, wrapping every reader error into a DataError.

    Returns ``(array, geometry)``: the array in SimpleITK order (z, y, x) and its :class:`Geometry`.
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
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} "
                        f"(a vector or colour image)")
    if np.issubdtype(array.dtype, np.floating) and path.name.endswith((".nii", ".nii.gz")):
        _check_nifti_finite(path)
    geometry = Geometry(tuple(int(v) for v in image.GetSize()), tuple(float(v) for v in image.GetSpacing()),
                        tuple(float(v) for v in image.GetOrigin()), tuple(float(v) for v in image.GetDirection()))
    return array, geometry


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
        return f"{path} has {int(depth)} slices along z; real LA volumes have {LA_DEPTH}"
    return None


def check_la_axis_order(shape: Sequence[int], path) -> None:
    """An LA volume must be stored (X, Y, Z), the depth axis last.

    The depth axis is the one with 88 slices (the real depth), else the strictly shortest one (x/y
    crops are at least 112 wide); when it is not the last axis the volume is stored e.g. (Z, Y, X).
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or shape[2] == LA_DEPTH:
        return
    if LA_DEPTH in shape[:2]:
        depth_axis = shape.index(LA_DEPTH)
    elif sorted(shape)[0] < sorted(shape)[1]:
        depth_axis = shape.index(min(shape))
    else:
        return
    if depth_axis != 2:
        raise DataError(f"wrong axis order in {path}: image shape {shape} has its depth ({shape[depth_axis]} slices) "
                        f"on axis {depth_axis}; LA volumes must be stored (X, Y, Z) with the depth last "
                        f"(is it (Z, Y, X)?)")


def check_intensity(image: np.ndarray, path, normalisation: str, switch: str) -> None:
    """Intensities of an imported release must look normalised: ``zscore`` (the LA release: |mean| <= 3,
    std in [0.25, 5]) or ``unit_range`` (the ACDC release: within [0, 1]); ``switch`` names the config
    key that turns the check off."""
    off = f"if they are right, set {switch}: false"
    if normalisation == "zscore":
        x = image.astype(np.float64, copy=False)
        mean, std = float(x.mean()), float(x.std())
        low, high = LA_ZSCORE_STD_RANGE
        if abs(mean) > LA_ZSCORE_MAX_ABS_MEAN or not low <= std <= high:
            raise DataError(f"implausible intensities in {path}: image mean {mean:.4g}, std {std:.4g}, but the "
                            f"release is z-scored (|mean| <= {LA_ZSCORE_MAX_ABS_MEAN:g}, std in [{low:g}, {high:g}]): "
                            f"unnormalised data? ({off})")
    elif normalisation == "unit_range":
        lo, hi = float(image.min()), float(image.max())
        if lo < -UNIT_RANGE_TOL or hi > 1 + UNIT_RANGE_TOL:
            raise DataError(f"implausible intensities in {path}: image values span [{lo:.4g}, {hi:.4g}], but the "
                            f"release is normalised to [0, 1]: unnormalised data? ({off})")


def check_same_geometry(image_path, label_path, image: Geometry, label: Geometry) -> None:
    """Image and label must have the same size, and the same spacing, origin and direction within the
    tolerances above; the DataError names the first field that differs."""
    if tuple(image.size) != tuple(label.size):
        raise DataError(f"shape mismatch: image {image_path} has shape {tuple(image.size)} but label "
                        f"{label_path} has shape {tuple(label.size)}")
    origin_tol = ORIGIN_TOL_VOXELS * min(min(image.spacing), min(label.spacing))
    fields = (("spacing", image.spacing, label.spacing, dict(rtol=SPACING_RTOL, atol=SPACING_ATOL),
               f"relative {SPACING_RTOL:g}"),
              ("origin", image.origin, label.origin, dict(rtol=0, atol=origin_tol), f"{origin_tol:.3g} mm"),
              ("direction", image.direction, label.direction, dict(rtol=0, atol=DIRECTION_ATOL),
               f"{DIRECTION_ATOL:g}"))
    for name, a, b, tol, tol_text in fields:
        if len(a) != len(b) or not np.allclose(a, b, **tol):
            raise DataError(f"geometry mismatch: image {image_path} has {name} {_fmt(a)} but label {label_path} "
                            f"has {name} {_fmt(b)} (tolerance {tol_text})")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


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
_FRAME_NUMBER = re.compile(r"^\+?\d+$")


def parse_info_cfg(path: str | os.PathLike) -> dict[str, str | int]:
    """Parse an ACDC ``Info.cfg`` (``KEY: value`` lines; a UTF-8 byte-order mark and CRLF are fine).

    ED and ES must be integer frame numbers (``2.7`` is an error), >= 1, different, and at most
    NbFrame when given (itself an integer); they become ints, the other values stay strings.
    """
    path = require_file(path, "Info.cfg")
    info: dict[str, str | int] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except Exception as exc:
        raise DataError(f"unreadable Info.cfg {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.replace("\ufeff", "")
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(f"malformed Info.cfg {path}: line {n} is not 'KEY: value': {line!r}")
        key, value = line.split(":", 1)
        info[key.strip()] = value.strip()
    for key in INFO_CFG_INT_KEYS:
        if key not in info:
            raise DataError(f"malformed Info.cfg {path}: key '{key}' missing")
        info[key] = _frame_number(path, key, info[key])
        if info[key] < 1:
            raise DataError(f"malformed Info.cfg {path}: {key} must be >= 1, got {info[key]}")
    if info["ED"] == info["ES"]:
        raise DataError(f"malformed Info.cfg {path}: ED and ES are the same frame ({info['ED']})")
    if "NbFrame" in info:
        nb = _frame_number(path, "NbFrame", info["NbFrame"])
        for key in INFO_CFG_INT_KEYS:
            if info[key] > nb:
                raise DataError(f"malformed Info.cfg {path}: {key}={info[key]} exceeds NbFrame={nb}")
    return info


def _frame_number(path: Path, key: str, value) -> int:
    if not _FRAME_NUMBER.match(str(value)):
        raise DataError(f"malformed Info.cfg {path}: {key} is not an integer frame number: {value!r}")
    return int(str(value))


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


# --------------------------------------------------------------------------- layouts
def require_layout(dataset: str, source: str, raw_dir: str | os.PathLike, expected: Sequence[Path],
                   what: str = "case", n_listed: int | None = None) -> None:
    """Raise one DataError (:func:`layout_error`) when none of the ``expected`` input paths of the
    ``n_listed`` (default: one per path) listed ``what``s exists: ``raw_dir`` then holds another layout,
    or nothing this dataset can read."""
    if not expected or any(os.path.lexists(p) for p in expected):
        return
    raise layout_error(dataset, source, raw_dir, len(expected) if n_listed is None else n_listed, what)


def find_layouts(folder: Path) -> list[tuple[str, str, str, list[str]]]:
    """``(dataset, kind, pattern, IDs)`` of each registered dataset's release layout found in ``folder``
    (the datasets' ``release_globs``: per kind, glob patterns whose first wildcard part is the ID)."""
    from ssnet.datasets import DATASETS

    found = []
    for data in DATASETS.values():
        for kind, patterns in data.release_globs.items():
            for pattern in patterns:
                ids = _glob_ids(folder, pattern)
                if ids:
                    found.append((data.name, kind, pattern, ids))
                    break
    return found


def _glob_ids(folder: Path, pattern: str) -> list[str]:
    parts = pattern.split("/")
    k = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts) - 1)
    try:
        matches = [m.relative_to(folder).parts[k] for m in folder.glob(pattern)]
    except OSError:
        return []
    return sorted({re.sub(r"\.(h5|nrrd|nii\.gz|nii)$", "", m) for m in matches})


def layout_error(dataset: str, source: str, raw_dir: str | os.PathLike, n_listed: int,
                 what: str = "case") -> DataError:
    """One line saying what ``raw_dir`` holds instead of the ``dataset`` ``source`` layout: another
    dataset's or kind's layout (at most 5 of its IDs), the right layout one folder down or with other
    IDs, nothing recognisable (at most 5 of its entries), or that it is no folder at all."""
    from ssnet.datasets import DATASETS, get_dataset

    data = get_dataset(dataset)
    kind = "raw" if source == "synthetic" else source
    raw_dir = Path(raw_dir)
    must = f"it must be {data.release_hints[kind]}" if kind in data.release_hints else ""
    none = f"none of the {n_listed} listed {what}s is there"
    problem = path_problem(raw_dir, "dir")
    if problem:
        state = "does not exist" if problem == "missing" else problem
        return DataError(f"raw_dir {raw_dir} {state}; {must}")
    found = [(*f, None) for f in find_layouts(raw_dir)]
    if not found:  # one folder down (raw_dir set to the parent of the release)
        try:
            subfolders = sorted(p for p in raw_dir.iterdir() if p.is_dir())
        except OSError:
            subfolders = []
        found = [(*f, folder) for folder in subfolders[:50] for f in find_layouts(folder)]
    mine = [f for f in found if f[:2] == (dataset, kind)]
    if mine and mine[0][4] is None:
        _, _, pattern, ids, _ = mine[0]
        return DataError(f"raw_dir {raw_dir} holds the {dataset} {kind} layout ({pattern}) but {none}; it has "
                         f"other IDs ({len(ids)}: {shown(ids, LAYOUT_IDS)}): are the split lists in splits_dir for "
                         f"this data?")
    if mine:
        _, _, pattern, ids, sub = mine[0]
        return DataError(f"raw_dir {raw_dir} holds the {dataset} {kind} layout one folder down, in '{sub.name}' "
                         f"({pattern}: {shown(ids, LAYOUT_IDS)}): set raw_dir to {sub}")
    if found:
        other, other_kind, pattern, ids, sub = found[0]
        place = f"{raw_dir}" + (f" (in its subfolder '{sub.name}')" if sub else "")
        fix = (f"set datasets.{dataset}.source: {other_kind} or point raw_dir at the {kind} release"
               if other == dataset else must)
        return DataError(f"raw_dir {place} holds the {other} {other_kind} layout "
                         f"({pattern}: {shown(ids, LAYOUT_IDS)}), not the {dataset} {kind} layout that "
                         f"datasets.{dataset}.source: {source} reads ({none}); {fix}")
    try:
        entries = sorted(p.name.replace("\n", "?") for p in raw_dir.iterdir())
    except OSError:
        entries = []
    names = " or ".join(sorted(DATASETS))
    content = f"it holds {len(entries)} entries ({shown(entries, LAYOUT_IDS)})" if entries else "it is empty"
    return DataError(f"raw_dir {raw_dir} holds no recognisable {names} release ({none}; {content}); {must}")
