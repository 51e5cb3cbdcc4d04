"""Preprocessing of a dataset's input into the pipeline's layout (protocol section 2).

Output (one folder, written atomically: it appears complete or not at all)::

    <out>/<the dataset's layout>        see ssnet/datasets/<name>.py; for the built-in datasets:
    LA:   <out>/cases/<ID>.h5           image float32 (X, Y, Z), label uint8 {0,1}, gzip
          <out>/crop_boxes.csv          per case: half-open x/y crop box, the 4 margins, raw/out shape
    ACDC: <out>/slices/<vol>_slice_K.h5 train.list volumes, one 2D slice each (K 1-based), image H x W
          <out>/volumes/<vol>.h5        EVERY listed volume (train, val, test): image Z x H x W,
                                        label, attribute ``spacing`` (z, y, x) in mm
    <out>/splits/*.list                 the split lists used, entries normalised (and derived ones, e.g.
                                        ACDC train_slices.list)
    <out>/preprocess.json               dataset, source, params, counts, warnings
    <out>/manifest.csv                  every input file, its SHA-256 and the outputs it produced

:func:`preprocess_dataset` is the one entry point: every input check of the dataset
(:meth:`~ssnet.datasets.Dataset.check_inputs`, using :mod:`ssnet.data.checks`) runs over all cases
before anything is written; then the dataset writes its layout
(:meth:`~ssnet.datasets.Dataset.write_outputs`) and :func:`write_dataset` adds the split lists,
manifest and summary. This module holds the LA and ACDC raw-archive readers and writers; the
preprocessed releases are read by :mod:`ssnet.data.release`.

``source`` selects the input kind: ``raw`` (the challenge archives), ``synthetic`` (the generated
archives in the raw formats; no real-data warnings) or ``preprocessed`` (the widely shared
preprocessed releases, imported into the same layout).
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ssnet.config.params import complete
from ssnet.data import checks
from ssnet.data.provenance import Manifest, add_split_lists
from ssnet.data.splits import acdc_slice_names, acdc_volumes, check_disjoint, parse_acdc_volume, patients_of
from ssnet.datasets import get_dataset
from ssnet.errors import DataError
from ssnet.jobs import warn
from ssnet.io import atomic_dir, write_json, write_lines

SOURCES = ("raw", "synthetic", "preprocessed")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray, attrs: Mapping[str, Any] | None = None) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image, compression="gzip")
        handle.create_dataset("label", data=label, compression="gzip")
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value


# =========================================================================== LA
def la_root(raw_dir: str | os.PathLike) -> Path:
    """The folder holding the case folders: ``<raw>/Training Set`` if present, else ``<raw>``."""
    raw_dir = Path(raw_dir)
    return raw_dir / "Training Set" if (raw_dir / "Training Set").is_dir() else raw_dir


def case_seed(case_id: str) -> int:
    """A stable 63-bit integer for a case ID (independent of Python's hash randomisation)."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "big") >> 1


def la_margins(seed: int, case_id: str, margin_low: int = 10, margin_high: int = 20) -> tuple[int, int, int, int]:
    """Crop margins (x_lo, x_hi, y_lo, y_hi), each in [margin_low, margin_high), seeded by (seed, case)."""
    rng = np.random.default_rng([int(seed), case_seed(case_id)])
    return tuple(int(v) for v in rng.integers(margin_low, margin_high, size=4))  # type: ignore[return-value]


def la_crop_box(label_xyz: np.ndarray, margins: Sequence[int], min_extent: int = 112) -> tuple[int, int, int, int]:
    """Half-open crop box (x_lo, x_hi, y_lo, y_hi) of the reference rule.

    Per axis with bounding box [min, max] (inclusive indices) and extent = max - min:
    ``p = max(min_extent - extent, 0) // 2``, ``lo = max(min - m_lo - p, 0)``,
    ``hi = min(max + m_hi + p, size)``; the crop is ``[lo:hi]``.
    """
    nz = np.nonzero(label_xyz)
    box = []
    for axis, (m_lo, m_hi) in enumerate(((margins[0], margins[1]), (margins[2], margins[3]))):
        lo_i, hi_i = int(nz[axis].min()), int(nz[axis].max())
        p = max(int(min_extent) - (hi_i - lo_i), 0) // 2
        box += [max(lo_i - int(m_lo) - p, 0), min(hi_i + int(m_hi) + p, label_xyz.shape[axis])]
    return tuple(box)  # type: ignore[return-value]


def _la_paths(root: Path, case_id: str) -> tuple[Path, Path]:
    return root / case_id / "lgemri.nrrd", root / case_id / "laendo.nrrd"


def _la_read(root: Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one raw LA case; arrays in (x, y, z) order, label {0, 255}."""
    img_path, lab_path = _la_paths(root, case_id)
    checks.require_file(img_path, "image file", case_id)
    checks.require_file(lab_path, "label file", case_id)
    image, img_geom = checks.read_image(img_path)
    label, lab_geom = checks.read_image(lab_path)
    checks.check_dtype(image, img_path, "the image", kind="real")
    checks.check_dtype(label, lab_path, "the label", kind="integer")
    checks.check_same_geometry(img_path, lab_path, img_geom, lab_geom)
    checks.check_image_values(image, img_path)
    checks.check_label_values(label, checks.LA_LABEL_VALUES, lab_path)
    return image.transpose(2, 1, 0), label.transpose(2, 1, 0)


def la_process_case(image_xyz: np.ndarray, label_xyz: np.ndarray, margins: Sequence[int],
                    min_extent: int = 112) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Steps 1-3 of the LA protocol on (x, y, z) arrays: binarise, z-score, crop x/y."""
    label = (label_xyz == 255).astype(np.uint8)
    raw = image_xyz.astype(np.float64)
    image = ((raw - raw.mean()) / raw.std()).astype(np.float32)  # population std, whole volume
    x0, x1, y0, y1 = la_crop_box(label, margins, min_extent)
    return image[x0:x1, y0:y1, :], label[x0:x1, y0:y1, :], (x0, x1, y0, y1)


def validate_la(root: Path, case_ids: Sequence[str], warn_depth: bool = False,
                origin: Mapping[str, str] | None = None) -> list[str]:
    """Check every case (raising DataError); return the warnings (z depth other than 88 if asked).

    ``origin`` maps a case to the split list it comes from, named next to a missing case.
    """
    if len(set(case_ids)) != len(case_ids):
        dup = sorted({c for c in case_ids if list(case_ids).count(c) > 1})
        raise DataError(f"LA case list has duplicates: {', '.join(dup)}")
    checks.require_cases(root, case_ids, origin=origin)
    warnings = []
    for cid in case_ids:
        image, _ = _la_read(root, cid)
        warning = checks.la_depth_warning(image.shape[2], _la_paths(root, cid)[0]) if warn_depth else None
        if warning:
            warn(warning)
            warnings.append(warning)
    return warnings


def write_la(root: Path, case_ids: Sequence[str], out: Path, seed: int, margin_low: int, margin_high: int,
             min_extent: int, margins: Mapping[str, Sequence[int]] | None = None,
             manifest: Manifest | None = None) -> list[dict[str, Any]]:
    """Write ``cases/<ID>.h5`` and ``crop_boxes.csv`` of checked raw cases into ``out``; return the rows.

    ``margins`` maps a case ID to recorded (x_lo, x_hi, y_lo, y_hi) margins instead of the seeded draw.
    """
    (out / "cases").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cid in enumerate(case_ids, 1):
        image, label = _la_read(root, cid)
        m = tuple(int(v) for v in margins[cid][:4]) if margins and cid in margins else \
            la_margins(seed, cid, margin_low, margin_high)
        img_c, lab_c, box = la_process_case(image, label, m, min_extent)
        _write_h5(out / "cases" / f"{cid}.h5", img_c, lab_c,
                  {"case_id": cid, "crop_box_xy": np.asarray(box), "margins": np.asarray(m)})
        if manifest is not None:
            img_path, lab_path = _la_paths(root, cid)
            manifest.add("image", cid, img_path, [f"cases/{cid}.h5", "crop_boxes.csv"])
            manifest.add("label", cid, lab_path, [f"cases/{cid}.h5", "crop_boxes.csv"])
        rows.append({"case": cid, "x_lo": box[0], "x_hi": box[1], "y_lo": box[2], "y_hi": box[3],
                     "m_x_lo": m[0], "m_x_hi": m[1], "m_y_lo": m[2], "m_y_hi": m[3],
                     "raw_x": image.shape[0], "raw_y": image.shape[1], "raw_z": image.shape[2],
                     "out_x": img_c.shape[0], "out_y": img_c.shape[1], "out_z": img_c.shape[2]})
        _log(f"[LA {i}/{len(case_ids)}] {cid}: raw {image.shape} -> crop x[{box[0]}:{box[1]}] "
             f"y[{box[2]}:{box[3]}] -> {img_c.shape}")
    with open(out / "crop_boxes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def preprocess_la(raw_dir: str | os.PathLike, case_ids: Sequence[str], out_dir: str | os.PathLike, seed: int,
                  margin_low: int = 10, margin_high: int = 20, min_extent: int = 112,
                  margins: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, Any]]:
    """Preprocess raw LA cases into ``out_dir/cases/<ID>.h5`` + ``out_dir/crop_boxes.csv`` (atomic).

    ``margins`` maps a case ID to (x_lo, x_hi, y_lo, y_hi) margins to use instead of the seeded
    draw (e.g. the reference's recorded values). Returns the crop-box rows.
    """
    root = la_root(raw_dir)
    case_ids = list(case_ids)
    validate_la(root, case_ids)
    with atomic_dir(out_dir) as tmp:
        return write_la(root, case_ids, tmp, seed, margin_low, margin_high, min_extent, margins)


# =========================================================================== ACDC
def acdc_root(raw_dir: str | os.PathLike) -> Path:
    """The folder holding ``patientNNN`` folders: ``<raw>/training`` if present, else ``<raw>``."""
    raw_dir = Path(raw_dir)
    return raw_dir / "training" if (raw_dir / "training").is_dir() else raw_dir


def _acdc_frame_paths(root: Path, volume: str) -> tuple[Path, Path]:
    patient, f = parse_acdc_volume(volume)
    info = checks.parse_info_cfg(root / patient / "Info.cfg")
    frame = int(info["ED"] if f == 1 else info["ES"])
    stem = root / patient / f"{patient}_frame{frame:02d}"
    img, lab = Path(f"{stem}.nii.gz"), Path(f"{stem}_gt.nii.gz")
    phase = "ED" if f == 1 else "ES"
    checks.require_file(img, f"{phase} frame image", volume)
    checks.require_file(lab, f"{phase} frame label", volume)
    return img, lab


def _acdc_read(root: Path, volume: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read and check one ACDC volume: image/label (Z, H, W), spacing (z, y, x)."""
    img_path, lab_path = _acdc_frame_paths(root, volume)
    image, img_geom = checks.read_image(img_path)
    label, lab_geom = checks.read_image(lab_path)
    checks.check_dtype(image, img_path, "the image", kind="real")
    checks.check_dtype(label, lab_path, "the label", kind="integer")
    checks.check_same_geometry(img_path, lab_path, img_geom, lab_geom)
    checks.check_image_values(image, img_path)
    checks.check_label_values(label, checks.ACDC_LABEL_VALUES, lab_path)
    spacing = img_geom.spacing
    return image, label, (spacing[2], spacing[1], spacing[0])


def acdc_normalise(image: np.ndarray) -> np.ndarray:
    """Per-volume min-max to [0, 1], computed in float64, stored as float32."""
    x = image.astype(np.float64)
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


def validate_acdc(root: Path, splits: dict[str, list[str]]) -> dict[str, int]:
    """Check every listed volume and ``train_slices`` (derived from the depths when absent); return
    the slice count per volume."""
    check_disjoint(splits)
    volumes = acdc_volumes(splits)
    for v in volumes:
        parse_acdc_volume(v)
    origin = {}
    for name in ("train", "val", "test"):
        for v in splits[name]:
            origin.setdefault(parse_acdc_volume(v)[0], f"{name}.list")
    checks.require_cases(root, patients_of(volumes), "patient folder", origin=origin)
    depth = {}
    for v in volumes:
        image, _, _ = _acdc_read(root, v)
        depth[v] = int(image.shape[0])
    if "train_slices" in splits:
        train = set(splits["train"])
        expected = {s for v in splits["train"] for s in acdc_slice_names(v, depth[v])}
        bad = [s for s in splits["train_slices"] if s not in expected]
        if bad:
            outside = [s for s in bad if s.rsplit("_slice_", 1)[0] not in train]
            what = "volumes not in train.list" if outside else "slice indices beyond the volume depth"
            raise DataError(f"train_slices.list names {len(bad)} slice(s) with {what}: {', '.join(bad[:10])}")
    else:
        splits["train_slices"] = [s for v in splits["train"] for s in acdc_slice_names(v, depth[v])]
    return depth


def write_acdc(root: Path, splits: Mapping[str, Sequence[str]], out: Path,
               manifest: Manifest | None = None) -> dict[str, int]:
    """Write ``volumes/`` (every listed volume) and ``slices/`` (train.list volumes) of checked volumes."""
    (out / "slices").mkdir(parents=True, exist_ok=True)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    train = set(splits["train"])
    volumes = acdc_volumes(splits)
    n_slices = 0
    for i, v in enumerate(volumes, 1):
        image, label, spacing = _acdc_read(root, v)
        image = acdc_normalise(image)
        label = label.astype(np.uint8)
        _write_h5(out / "volumes" / f"{v}.h5", image, label, {"spacing": np.asarray(spacing, dtype=np.float64)})
        outputs = [f"volumes/{v}.h5"]
        if v in train:
            for k in range(image.shape[0]):
                _write_h5(out / "slices" / f"{v}_slice_{k + 1}.h5", image[k], label[k])
                outputs.append(f"slices/{v}_slice_{k + 1}.h5")
            n_slices += image.shape[0]
        if manifest is not None:
            patient = parse_acdc_volume(v)[0]
            img_path, lab_path = _acdc_frame_paths(root, v)
            manifest.add("info", patient, root / patient / "Info.cfg", [f"volumes/{v}.h5"])
            manifest.add("image", v, img_path, outputs)
            manifest.add("label", v, lab_path, outputs)
        _log(f"[ACDC {i}/{len(volumes)}] {v}: {image.shape} spacing(z,y,x)={spacing}"
             + (f" -> {image.shape[0]} slices" if v in train else ""))
    return {"volumes": len(volumes), "slices": n_slices}


def preprocess_acdc(raw_dir: str | os.PathLike, splits: dict[str, list[str]],
                    out_dir: str | os.PathLike) -> dict[str, int]:
    """Preprocess the listed ACDC volumes into ``out_dir/slices`` and ``out_dir/volumes`` (atomic).

    ``splits`` holds ``train``, ``val``, ``test`` volume lists (``patientNNN_frame01`` = ED,
    ``_frame02`` = ES, as given by Info.cfg). Train volumes are also written whole to ``volumes/``.
    """
    root, splits = acdc_root(raw_dir), dict(splits)
    validate_acdc(root, splits)
    with atomic_dir(out_dir) as tmp:
        return write_acdc(root, splits, tmp)


# =========================================================================== entry point
def preprocess_dataset(dataset: str, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike,
                       out_dir: str | os.PathLike, params: Mapping[str, Any] | None = None,
                       source: str = "raw") -> dict[str, Any]:
    """Read the split lists, check every input, then write the preprocessed dataset atomically.

    ``source``: ``raw`` (challenge archive), ``synthetic`` (generated raw-format archive: as raw,
    without the real-data warnings) or ``preprocessed`` (the shared preprocessed release, checked and
    copied byte for byte; of the preprocessing parameters only ``check_intensity`` applies to it).
    ``params``: the dataset's ``preprocessing`` block (its ``preprocessing_params``; ConfigError for an
    unknown key or a bad value, defaults filled). Returns the summary written to ``preprocess.json``.
    """
    data = get_dataset(dataset)
    splits, summary = check_dataset(dataset, raw_dir, splits_dir, params, source)
    p = summary["params"]
    return write_dataset(out_dir, splits_dir, splits, summary,
                         lambda tmp, manifest: data.write_outputs(raw_dir, splits, p, source, tmp, manifest))


def check_dataset(dataset: str, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike,
                  params: Mapping[str, Any] | None = None, source: str = "raw") -> tuple[dict, dict[str, Any]]:
    """Read the split lists and check every input (nothing is written): (splits, summary with warnings).

    Splits are completed as the dataset derives them (e.g. ACDC ``train_slices`` from the data).
    """
    data = get_dataset(dataset)
    p = complete(data.preprocessing_params, params, f"datasets.{data.name}.preprocessing")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}: expected one of {', '.join(SOURCES)}")
    splits = data.read_splits(splits_dir)
    check_disjoint(splits)
    summary: dict[str, Any] = {"dataset": data.name, "source": source, "params": p, "raw_dir": str(raw_dir),
                               "splits_dir": str(splits_dir), "splits": {k: len(v) for k, v in splits.items()}}
    if source == "preprocessed":
        summary["params_note"] = ("the release is already preprocessed: only check_intensity applies "
                                  "(the other preprocessing parameters do not)")
    summary["warnings"] = data.check_inputs(raw_dir, splits, p, source)
    return splits, summary


def write_dataset(out_dir: str | os.PathLike, splits_dir: str | os.PathLike, splits: Mapping[str, Sequence[str]],
                  summary: dict[str, Any], write: Callable[[Path, Manifest], Mapping[str, int]]) -> dict[str, Any]:
    """Write a preprocessed folder atomically: ``write(tmp, manifest)`` (the data; returns counts added
    to ``summary``), then the split lists, ``manifest.csv`` and ``preprocess.json`` (= ``summary``)."""
    manifest = Manifest()
    with atomic_dir(out_dir) as tmp:
        summary.update(write(tmp, manifest))
        copy_splits(splits_dir, splits, tmp)
        add_split_lists(manifest, splits_dir, list(splits))
        manifest.write(tmp)
        write_json(tmp / "preprocess.json", summary)
    return summary


def copy_splits(splits_dir: str | os.PathLike, splits: Mapping[str, Sequence[str]], out: Path) -> None:
    """``out/splits/<name>.list`` for every list as used, one ID per line: the normalised entries of the
    input file in ``splits_dir`` (:func:`ssnet.io.read_list`), or the derived list."""
    dest = out / "splits"
    dest.mkdir(parents=True, exist_ok=True)
    for name, items in splits.items():
        write_lines(dest / f"{name}.list", list(items))
