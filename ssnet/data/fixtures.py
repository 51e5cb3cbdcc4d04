"""Miniature copies of the real LA and ACDC layouts, for tests and for trying the pipeline.

Every case ID of the official split lists (``resources/splits/``) exists, with tiny volumes, in the
exact folder and file layout of each real input kind (protocol section 1):

- ``LA`` ``raw``: ``Training Set/<ID>/lgemri.nrrd`` + ``laendo.nrrd`` (uint8, raw NRRD, (x, y, 88),
  label {0, 255}), an unused ``lawall.nrrd`` in some cases and a stray ``desktop.ini``.
- ``LA`` ``preprocessed``: ``2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` (``image`` float32 z-scored,
  ``label`` uint8 {0, 1}, gzip), plus the release's own ``train.list``/``test.list`` beside it.
- ``ACDC`` ``raw``: ``training/patientNNN/Info.cfg``, ``patientNNN_frameYY[_gt].nii.gz`` for ED and
  ES (patient090: ED 4, ES 11 as in the real data), a small ``patientNNN_4d.nii.gz`` and a stray
  ``desktop.ini``.
- ``ACDC`` ``preprocessed``: ``data/patientNNN_frame0F.h5`` for all 200 volumes and
  ``data/slices/patientNNN_frame0F_slice_K.h5`` for every slice (K 1-based), plus the lists.

Slice counts per ACDC volume follow ``all_slices.list`` (or ``train_slices.list``), so the official
``train_slices.list`` matches. The images are the synthetic generator's (:mod:`ssnet.data.synthetic`),
so a network can learn something from them. Same seed -> same content.

    python -m ssnet.data.fixtures OUT_DIR [--seed N]   # writes OUT_DIR/<dataset>/{raw,preprocessed}
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from ssnet.data.synthetic import ACDC_GROUPS, _acdc_frame, _la_volume, _write_sitk
from ssnet.datasets import DATASETS, get_dataset
from ssnet.io import atomic_dir, read_list, write_lines

OFFICIAL_SPLITS = Path(__file__).resolve().parents[2] / "resources" / "splits"
KINDS = ("raw", "preprocessed")
LA_SIZES_XY = ((24, 24), (28, 24))  # (X, Y) of the miniature LA cases, alternating; 88 slices as the real ones
ACDC_SIZE_HW = (24, 32)  # inclusive range of the miniature ACDC in-plane sizes
STRAY_INI = "[.ShellClassInfo]\r\nIconResource=C:\\icon.ico,0\r\n"


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image, compression="gzip")
        handle.create_dataset("label", data=label, compression="gzip")


# --------------------------------------------------------------------------- LA
def _la_ids(splits_dir: Path) -> list[str]:
    return read_list(splits_dir / "train.list") + read_list(splits_dir / "test.list")


def make_la_layout(out_dir: str | os.PathLike, kind: str, splits_dir: str | os.PathLike, seed: int = 0,
                   size_xy=LA_SIZES_XY, n_slices: int = 88) -> list[str]:
    """Write a miniature LA release of ``kind`` (``raw`` | ``preprocessed``) under ``out_dir`` (atomic)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {KINDS}")
    splits_dir = Path(splits_dir)
    ids = _la_ids(splits_dir)
    sizes = [tuple(int(v) for v in s) for s in np.asarray(size_xy, dtype=int).reshape(-1, 2)]
    with atomic_dir(out_dir) as tmp:
        root = tmp / ("Training Set" if kind == "raw" else "2018LA_Seg_Training Set")
        for i, cid in enumerate(ids):
            rng = np.random.default_rng([int(seed), 0x1A, i])
            sx, sy = sizes[i % len(sizes)]
            image, label = _la_volume(rng, sx, sy, int(n_slices))  # (x, y, z), label {0, 255}
            folder = root / cid
            folder.mkdir(parents=True)
            if kind == "raw":
                _write_sitk(image.transpose(2, 1, 0), folder / "lgemri.nrrd", (1, 1, 1), compress=False)
                _write_sitk(label.transpose(2, 1, 0), folder / "laendo.nrrd", (1, 1, 1), compress=False)
                if i % 7 == 3:  # the real archive's unused wall label
                    _write_sitk(np.zeros_like(label).transpose(2, 1, 0), folder / "lawall.nrrd", (1, 1, 1),
                                compress=False)
            else:
                raw = image.astype(np.float64)
                normalised = ((raw - raw.mean()) / raw.std()).astype(np.float32)
                _write_h5(folder / "mri_norm2.h5", normalised, (label == 255).astype(np.uint8))
            if i == 5:
                (folder / "desktop.ini").write_text(STRAY_INI)
        if kind == "preprocessed":  # the release ships its own lists beside the case folder
            write_lines(tmp / "train.list", read_list(splits_dir / "train.list"))
            write_lines(tmp / "test.list", read_list(splits_dir / "test.list"))
    return ids


# --------------------------------------------------------------------------- ACDC
def acdc_depths(splits_dir: str | os.PathLike, default: int = 8) -> dict[str, int]:
    """Slices per volume for every volume of the lists (from all_slices.list / train_slices.list)."""
    splits_dir = Path(splits_dir)
    volumes = [v for name in ("train", "val", "test") for v in read_list(splits_dir / f"{name}.list")]
    depth = {v: 0 for v in volumes}
    for name in ("all_slices", "train_slices"):
        path = splits_dir / f"{name}.list"
        if path.is_file():
            counts: dict[str, int] = {}
            for s in read_list(path):
                v, k = s.rsplit("_slice_", 1)
                counts[v] = max(counts.get(v, 0), int(k))
            for v, n in counts.items():
                depth[v] = depth.get(v) or n
    for v in volumes:  # ED and ES of a patient share the depth; fill unknown ones
        if not depth[v]:
            other = v[:-1] + ("2" if v.endswith("1") else "1")
            depth[v] = depth.get(other) or int(default)
    return depth


def _acdc_geometry(prng: np.random.Generator, nz: int, h: int, w: int) -> dict[str, Any]:
    m = min(h, w)
    return {
        "nz": nz, "h": h, "w": w,
        "cy": h * prng.uniform(0.42, 0.58), "cx": w * prng.uniform(0.42, 0.58),
        "drift": prng.normal(0, 0.2, 2), "ecc": prng.uniform(0.9, 1.1),
        "r_lv": m * prng.uniform(0.12, 0.16), "t_myo": m * prng.uniform(0.07, 0.09),
        "r_rv": m * prng.uniform(0.14, 0.18), "rv_angle": np.pi + prng.uniform(-0.6, 0.6),
        "es_shrink": prng.uniform(0.7, 0.8),
        "blood": prng.uniform(900, 1400), "myo": prng.uniform(330, 480),
    }


def make_acdc_layout(out_dir: str | os.PathLike, kind: str, splits_dir: str | os.PathLike, seed: int = 0,
                     size_hw=ACDC_SIZE_HW, default_slices: int = 8) -> list[str]:
    """Write a miniature ACDC release of ``kind`` (``raw`` | ``preprocessed``) under ``out_dir`` (atomic)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {KINDS}")
    splits_dir = Path(splits_dir)
    depth = acdc_depths(splits_dir, default_slices)
    patients = sorted({v.split("_")[0] for v in depth})
    lo, hi = (int(v) for v in size_hw)
    with atomic_dir(out_dir) as tmp:
        for i, patient in enumerate(patients):
            prng = np.random.default_rng([int(seed), 0xACDC, int(patient[7:])])
            ed = 4 if patient == "patient090" else (1 if prng.random() < 0.7 else int(prng.integers(2, 6)))
            es = 11 if patient == "patient090" else ed + int(prng.integers(7, 13))
            nb = es + int(prng.integers(2, 15))
            h, w = int(prng.integers(lo, hi + 1)), int(prng.integers(lo, hi + 1))
            nz = depth.get(f"{patient}_frame01") or depth.get(f"{patient}_frame02") or int(default_slices)
            geom = _acdc_geometry(prng, nz, h, w)
            spacing = (1.5625, 1.5625, 5.0 if prng.random() < 0.12 else 10.0)
            frames = {}
            for f, (phase, frame) in enumerate((("ED", ed), ("ES", es)), start=1):
                frames[f] = (frame, *_acdc_frame(prng, geom, phase))
            if kind == "raw":
                folder = tmp / "training" / patient
                folder.mkdir(parents=True)
                info = {"ED": ed, "ES": es, "Group": ACDC_GROUPS[i % len(ACDC_GROUPS)],
                        "Height": f"{prng.uniform(150, 195):.1f}", "NbFrame": nb,
                        "Weight": f"{prng.uniform(50, 110):.1f}"}
                (folder / "Info.cfg").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
                for frame, image, label in frames.values():
                    stem = folder / f"{patient}_frame{frame:02d}"
                    _write_sitk(image, Path(f"{stem}.nii.gz"), spacing, compress=True)
                    _write_sitk(label, Path(f"{stem}_gt.nii.gz"), spacing, compress=True)
                cine = np.stack([frames[1][1][:2, :4, :4], frames[2][1][:2, :4, :4]])  # tiny 4D stand-in
                _write_sitk(cine, folder / f"{patient}_4d.nii.gz", (*spacing, 1.0), compress=True)
                if i == 0:
                    (folder / "desktop.ini").write_text(STRAY_INI)
            else:
                data = tmp / "data"
                for f, (_, image, label) in frames.items():
                    volume = f"{patient}_frame0{f}"
                    x = image.astype(np.float64)
                    image = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
                    label = label.astype(np.uint8)
                    _write_h5(data / f"{volume}.h5", image, label)
                    for k in range(image.shape[0]):
                        _write_h5(data / "slices" / f"{volume}_slice_{k + 1}.h5", image[k], label[k])
        if kind == "preprocessed":  # the release ships its lists beside data/
            for name in ("train", "val", "test", "train_slices"):
                if (splits_dir / f"{name}.list").is_file():
                    write_lines(tmp / f"{name}.list", read_list(splits_dir / f"{name}.list"))
            (tmp / "data" / "desktop.ini").write_text(STRAY_INI)
    return patients


# --------------------------------------------------------------------------- entry point
def make_layout(dataset: str, kind: str, out_dir: str | os.PathLike, splits_dir: str | os.PathLike | None = None,
                seed: int = 0) -> list[str]:
    """Miniature release of ``kind`` of a registered dataset (its ``make_fixture``), with every case of
    the lists in ``splits_dir`` (default: its official lists); returns the case IDs / patients."""
    data = get_dataset(dataset)
    return data.make_fixture(kind, out_dir, Path(splits_dir or OFFICIAL_SPLITS / data.name), seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="writes OUT_DIR/<dataset>/<kind>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append")
    parser.add_argument("--kind", choices=list(KINDS), action="append")
    args = parser.parse_args(argv)
    for dataset in args.dataset or sorted(DATASETS):
        for kind in args.kind or list(KINDS):
            make_layout(dataset, kind, Path(args.out_dir) / dataset / kind, seed=args.seed)
            print(f"wrote {Path(args.out_dir) / dataset / kind}")


if __name__ == "__main__":
    main()
