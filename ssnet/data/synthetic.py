"""Small synthetic datasets in the REAL raw archive formats (protocol section 1).

The volumes are tiny but not trivially separable: the foreground's contrast to its surroundings is
low compared with the noise, there are foreground-like distractors, a smooth multiplicative bias
field, partial-volume blur and Rician noise, and the shapes and sizes vary per case. Everything is
a deterministic function of the seed (same seed -> byte-identical files). The parameters of each
generator are declared by its dataset (``synthetic_params`` in ``ssnet/datasets/<name>.py``).

- LA: ``<out>/Training Set/<20-char ID>/lgemri.nrrd`` + ``laendo.nrrd`` (uint8, raw NRRD,
  spacing 1, label {0, 255}); some cases also have an unused ``lawall.nrrd`` and one case folder
  holds a stray ``desktop.ini``.
- ACDC: ``<out>/training/patientNNN/Info.cfg`` + ED/ES ``patientNNN_frameYY[_gt].nii.gz`` (int16
  images, uint8 labels 0..3, spacing in the header).
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from ssnet.config.params import complete
from ssnet.data.checks import parse_info_cfg
from ssnet.data.preprocess import acdc_root, la_root
from ssnet.datasets import get_dataset
from ssnet.errors import DataError
from ssnet.io import atomic_dir, write_lines

LA_ID_ALPHABET = string.ascii_uppercase + string.digits
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


# --------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    std = field.std()
    return field / std if std > 0 else field


def _bias_field(rng: np.random.Generator, shape, amplitude: float) -> np.ndarray:
    """Smooth multiplicative bias field: exp of a low-order polynomial in normalised coordinates."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    log_field = np.zeros(shape)
    for g in grids:
        log_field += rng.uniform(-1, 1) * g + rng.uniform(-0.5, 0.5) * g ** 2
    log_field += rng.uniform(-0.5, 0.5) * grids[0] * grids[1]
    peak = np.abs(log_field).max()
    if peak > 0:
        log_field *= amplitude / peak
    return np.exp(log_field)


def _rician(rng: np.random.Generator, clean: np.ndarray, sigma: float) -> np.ndarray:
    return np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)


def _write_sitk(array: np.ndarray, path: Path, spacing, compress: bool) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path), useCompression=compress)


def _la_case_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        cid = "".join(LA_ID_ALPHABET[i] for i in rng.integers(0, len(LA_ID_ALPHABET), 20))
        if cid not in taken:
            taken.add(cid)
            return cid


def _pick_size_xy(rng: np.random.Generator, size_xy) -> tuple[int, int]:
    arr = np.asarray(size_xy, dtype=int)
    if arr.shape == (2,):
        return int(arr[0]), int(arr[1])
    if arr.ndim == 2 and arr.shape[1] == 2 and len(arr) >= 1:
        row = arr[rng.integers(0, len(arr))]
        return int(row[0]), int(row[1])
    raise ValueError(f"size_xy must be (X, Y) or a list of (X, Y) pairs, got {size_xy!r}")


def _pick_range(rng: np.random.Generator, value, name: str) -> int:
    if np.isscalar(value):
        return int(value)
    lo, hi = (int(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name}: empty range {value!r}")
    return int(rng.integers(lo, hi + 1))


# --------------------------------------------------------------------------- LA
def _la_volume(rng: np.random.Generator, sx: int, sy: int, sz: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic LGE-MRI volume and its atrium mask, both (x, y, z)."""
    shape = (sx, sy, sz)
    x, y, z = np.meshgrid(np.arange(sx), np.arange(sy), np.arange(sz), indexing="ij")
    # atrium: an ellipsoid body with 1-3 lobes (vein-like), boundary perturbed by a smooth field
    centre = np.array([sx * rng.uniform(0.4, 0.6), sy * rng.uniform(0.4, 0.6), sz * rng.uniform(0.4, 0.6)])
    radii = np.array([sx * rng.uniform(0.12, 0.24), sy * rng.uniform(0.12, 0.24), sz * rng.uniform(0.18, 0.32)])
    implicit = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        c = centre + direction * radii * rng.uniform(0.8, 1.1)
        r = radii * rng.uniform(0.3, 0.5, 3)
        lobe = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
        implicit = np.minimum(implicit, lobe)
    implicit = implicit + 0.25 * _smooth_noise(rng, shape, 3.0)
    mask = implicit < 1.0
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n > 1:  # keep the biggest component: one atrium
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    if mask.sum() < 20:  # degenerate draw: fall back to the plain ellipsoid
        mask = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2 < 1

    # anatomy-ish intensities: dark outside the body, textured tissue, bright blood pools
    body = (((x - sx / 2) / (0.48 * sx)) ** 2 + ((y - sy / 2) / (0.45 * sy)) ** 2) < 1
    tissue = 70 + 12 * _smooth_noise(rng, shape, 2.0)
    clean = np.where(body, tissue, 15.0)
    contrast = rng.uniform(14, 26)  # low: comparable to texture and noise
    clean = np.where(mask, 70 + contrast, clean)
    # enhanced atrial wall (like LGE) right around the atrium, partly
    wall = ndimage.binary_dilation(mask, iterations=1) & ~mask
    wall &= _smooth_noise(rng, shape, 2.0) > 0.3
    clean = np.where(wall, 70 + contrast + rng.uniform(5, 20), clean)
    # distractors: other blood pools (ventricle, aorta) with the same intensity, not labelled
    for _ in range(int(rng.integers(1, 3))):
        for _try in range(10):
            c = np.array([sx * rng.uniform(0.2, 0.8), sy * rng.uniform(0.2, 0.8), sz * rng.uniform(0.2, 0.8)])
            r = np.array([sx * rng.uniform(0.06, 0.14), sy * rng.uniform(0.06, 0.14), sz * rng.uniform(0.15, 0.4)])
            blob = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 < 1
            if not np.any(blob & ndimage.binary_dilation(mask, iterations=2)):
                clean = np.where(blob, 70 + contrast * rng.uniform(0.8, 1.2), clean)
                break
    clean = ndimage.gaussian_filter(clean, sigma=(1.0, 1.0, 0.7))  # partial volume
    clean = clean * _bias_field(rng, shape, rng.uniform(0.15, 0.35))
    noisy = _rician(rng, clean, rng.uniform(7, 11))
    image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    label = (mask.astype(np.uint8) * 255).astype(np.uint8)
    return image, label


def make_synthetic_la(out_dir: str | os.PathLike, n_cases: int = 10, size_xy=(64, 64),
                      n_slices: int = 24, seed: int = 0) -> list[str]:
    """Write a synthetic LA raw archive under ``out_dir`` (atomic); return the case IDs (sorted).

    ``size_xy`` is an (X, Y) pair or a list of pairs drawn per case (the real data: 576 or 640).
    Arrays are generated in pynrrd (x, y, z) order and written through SimpleITK, whose array order
    is (z, y, x), so the NRRD header sizes read X Y Z like the real files.
    """
    n_cases, n_slices = int(n_cases), int(n_slices)
    if n_cases < 1 or n_slices < 4:
        raise ValueError(f"need n_cases >= 1 and n_slices >= 4, got {n_cases}, {n_slices}")
    rng = np.random.default_rng([int(seed), 0x1A])
    taken: set[str] = set()
    ids = [_la_case_id(rng, taken) for _ in range(n_cases)]
    stray = int(rng.integers(0, n_cases))
    with atomic_dir(out_dir) as tmp:
        root = tmp / "Training Set"
        for i, cid in enumerate(ids):
            case_rng = np.random.default_rng([int(seed), 0x1A, i])
            sx, sy = _pick_size_xy(case_rng, size_xy)
            image, label = _la_volume(case_rng, sx, sy, n_slices)
            folder = root / cid
            folder.mkdir(parents=True)
            _write_sitk(image.transpose(2, 1, 0), folder / "lgemri.nrrd", (1, 1, 1), compress=False)
            _write_sitk(label.transpose(2, 1, 0), folder / "laendo.nrrd", (1, 1, 1), compress=False)
            if i % 3 == 1:  # the real archive's unused wall label
                wall = ndimage.binary_dilation(label > 0, iterations=1) & (label == 0)
                _write_sitk((wall.astype(np.uint8) * 255).transpose(2, 1, 0), folder / "lawall.nrrd",
                            (1, 1, 1), compress=False)
            if i == stray:
                (folder / "desktop.ini").write_text("[.ShellClassInfo]\r\nIconResource=C:\\icon.ico,0\r\n")
    return sorted(ids)


# --------------------------------------------------------------------------- ACDC
def _acdc_frame(rng: np.random.Generator, geom: Mapping[str, Any], phase: str) -> tuple[np.ndarray, np.ndarray]:
    """One cine-MRI frame (Z, H, W) int16 and its label (Z, H, W) uint8 {0..3}."""
    nz, h, w = geom["nz"], geom["h"], geom["w"]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    label = np.zeros((nz, h, w), dtype=np.uint8)
    es = phase == "ES"
    r_lv0 = geom["r_lv"] * (geom["es_shrink"] if es else 1.0)
    t0 = geom["t_myo"] * (1.3 if es else 1.0)
    r_rv0 = geom["r_rv"] * (0.75 if es else 1.0)
    for k in range(nz):
        frac = k / max(nz - 1, 1)  # 0 = base, 1 = apex
        taper = 1.0 - 0.55 * frac
        cy = geom["cy"] + geom["drift"][0] * k + rng.normal(0, 0.3)
        cx = geom["cx"] + geom["drift"][1] * k + rng.normal(0, 0.3)
        ecc = geom["ecc"] * (1 + rng.normal(0, 0.03))
        dist = np.sqrt(((yy - cy) * ecc) ** 2 + ((xx - cx) / ecc) ** 2)
        r_lv = max(r_lv0 * taper, 2.0)
        t = max(t0 * (1 - 0.2 * frac), 1.5)
        ang = geom["rv_angle"]
        d_rv = r_lv + t + 0.2 * r_rv0
        ry, rx = cy + d_rv * np.sin(ang), cx + d_rv * np.cos(ang)
        r_rv = r_rv0 * (1.0 - 0.9 * frac)
        rv = (np.sqrt((yy - ry) ** 2 + ((xx - rx) / 1.2) ** 2) < r_rv) & (dist >= r_lv + t + 1.0)
        lab = np.zeros((h, w), dtype=np.uint8)
        lab[rv] = 1
        lab[(dist >= r_lv) & (dist < r_lv + t)] = 2
        lab[dist < r_lv] = 3
        label[k] = lab

    # intensities (integer-valued, ~0..2000): low myocardium/tissue contrast, bright blood pools
    shape = label.shape
    body = (((yy - h / 2) / (0.47 * h)) ** 2 + ((xx - w / 2) / (0.47 * w)) ** 2) < 1
    tissue = 420 + 90 * _smooth_noise(rng, shape, (0.5, 2.0, 2.0))
    clean = np.where(body[None], tissue, 30.0)
    blood = geom["blood"]
    clean[label == 3] = blood
    clean[label == 1] = blood * rng.uniform(0.8, 0.95)
    clean[label == 2] = geom["myo"]
    # distractor: a bright vessel-like blob outside the heart
    cy, cx = h * rng.uniform(0.15, 0.3), w * rng.uniform(0.65, 0.85)
    blob = (((yy - cy) / (0.08 * h)) ** 2 + ((xx - cx) / (0.08 * w)) ** 2) < 1
    for k in range(nz):
        sl = clean[k]
        sl[blob & (label[k] == 0)] = blood * 0.9
    clean = ndimage.gaussian_filter(clean, sigma=(0.3, 1.0, 1.0))
    clean = clean * _bias_field(rng, shape, rng.uniform(0.15, 0.35))
    noisy = _rician(rng, clean, rng.uniform(50, 90))
    image = np.clip(np.rint(noisy), 0, 2000).astype(np.int16)
    return image, label


def make_synthetic_acdc(out_dir: str | os.PathLike, n_patients: int = 10, seed: int = 0,
                        n_slices=(4, 8), size_hw=(48, 80)) -> list[str]:
    """Write a synthetic ACDC raw archive under ``out_dir`` (atomic); return the patient names.

    ``n_slices`` and ``size_hw`` are an int or an inclusive (low, high) range drawn per patient.
    """
    n_patients = int(n_patients)
    if not 1 <= n_patients <= 999:
        raise ValueError(f"n_patients must be in 1..999, got {n_patients}")
    rng = np.random.default_rng([int(seed), 0xACDC])
    patients = [f"patient{i:03d}" for i in range(1, n_patients + 1)]
    eds = [1 if rng.random() < 0.6 else int(rng.integers(2, 6)) for _ in patients]
    if n_patients >= 2 and all(e == 1 for e in eds):
        eds[1] = int(rng.integers(2, 6))  # ED is not always frame 1 (e.g. patient090: ED 4)
    with atomic_dir(out_dir) as tmp:
        root = tmp / "training"
        for i, (patient, ed) in enumerate(zip(patients, eds)):
            prng = np.random.default_rng([int(seed), 0xACDC, i])
            es = ed + int(prng.integers(7, 13))
            nb = es + int(prng.integers(2, 15))
            h = _pick_range(prng, size_hw, "size_hw")
            w = _pick_range(prng, size_hw, "size_hw")
            nz = _pick_range(prng, n_slices, "n_slices")
            m = min(h, w)
            geom = {
                "nz": nz, "h": h, "w": w,
                "cy": h * prng.uniform(0.42, 0.58), "cx": w * prng.uniform(0.42, 0.58),
                "drift": prng.normal(0, 0.4, 2), "ecc": prng.uniform(0.88, 1.12),
                "r_lv": m * prng.uniform(0.09, 0.14), "t_myo": m * prng.uniform(0.045, 0.07),
                "r_rv": m * prng.uniform(0.12, 0.18), "rv_angle": np.pi + prng.uniform(-0.6, 0.6),
                "es_shrink": prng.uniform(0.6, 0.78),
                "blood": prng.uniform(900, 1400), "myo": prng.uniform(330, 480),
            }
            spacing_xy = float(np.round(prng.uniform(1.2, 1.8), 4))
            spacing = (spacing_xy, spacing_xy, 5.0 if prng.random() < 0.15 else 10.0)
            folder = root / patient
            folder.mkdir(parents=True)
            info = {"ED": ed, "ES": es, "Group": ACDC_GROUPS[int(prng.integers(0, len(ACDC_GROUPS)))],
                    "Height": f"{prng.uniform(150, 195):.1f}", "NbFrame": nb,
                    "Weight": f"{prng.uniform(50, 110):.1f}"}
            (folder / "Info.cfg").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
            for phase, frame in (("ED", ed), ("ES", es)):
                image, label = _acdc_frame(prng, geom, phase)
                stem = folder / f"{patient}_frame{frame:02d}"
                _write_sitk(image, Path(f"{stem}.nii.gz"), spacing, compress=True)
                _write_sitk(label, Path(f"{stem}_gt.nii.gz"), spacing, compress=True)
    return patients


# --------------------------------------------------------------------------- splits
def _seeded_order(seed: int, names: list[str], sizes: dict[str, int]) -> list[str]:
    """``names`` in the seeded split order (val, test, train); DataError when the archive does not hold
    the generated number of cases."""
    if len(names) != sum(sizes.values()):
        raise DataError(f"synthetic archive holds {len(names)} cases, expected {sum(sizes.values())}")
    return [names[i] for i in np.random.default_rng([int(seed), 0x5B]).permutation(len(names))]


def la_synthetic_splits(raw_dir: str | os.PathLike, seed: int, sizes: dict[str, int]) -> dict[str, list[str]]:
    """``train.list`` and ``test.list`` (both sorted) of a synthetic LA archive with ``sizes``."""
    ids = sorted(p.name for p in la_root(raw_dir).iterdir() if p.is_dir())
    order = _seeded_order(seed, ids, sizes)
    return {"train": sorted(order[sizes["test"]:]), "test": sorted(order[:sizes["test"]])}


def acdc_synthetic_splits(raw_dir: str | os.PathLike, seed: int, sizes: dict[str, int]) -> dict[str, list[str]]:
    """ACDC lists of a synthetic archive: ``train.list`` (patients in the seeded order, like the
    official list), ``val.list`` and ``test.list`` (sorted), each patient giving ``_frame01`` then
    ``_frame02``, and ``train_slices.list`` (K = 1..Z, 1-based, in train.list order; Z read from the
    ED/ES image headers)."""
    root = acdc_root(raw_dir)
    patients = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("patient"))
    order = _seeded_order(seed, patients, sizes)
    n_val, n_test = sizes["val"], sizes["test"]
    val, test, train = sorted(order[:n_val]), sorted(order[n_val:n_val + n_test]), order[n_val + n_test:]

    def volumes(ps):
        return [f"{p}_frame0{f}" for p in ps for f in (1, 2)]

    slices = [s for p in train for s in _acdc_train_slices(root, p)]
    return {"train": volumes(train), "val": volumes(val), "test": volumes(test), "train_slices": slices}


def _acdc_train_slices(root: Path, patient: str) -> list[str]:
    """Slice names of a patient's ED (frame01) and ES (frame02) volumes, depth from the image headers."""
    import SimpleITK as sitk

    info = parse_info_cfg(root / patient / "Info.cfg")
    names = []
    for f, frame in ((1, info["ED"]), (2, info["ES"])):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(root / patient / f"{patient}_frame{int(frame):02d}.nii.gz"))
        reader.ReadImageInformation()
        names += [f"{patient}_frame0{f}_slice_{k}" for k in range(1, reader.GetSize()[2] + 1)]
    return names


# --------------------------------------------------------------------------- entry point
def make_synthetic(dataset: str, raw_dir: str | os.PathLike, splits_dir: str | os.PathLike,
                   params: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write a synthetic raw archive of ``dataset`` and its split lists (each atomically).

    ``params``: the dataset's ``synthetic`` block (its ``synthetic_params``; ConfigError for an
    unknown key or a bad value, defaults filled). Returns a summary: dataset, seed, params, cases, splits.
    """
    data = get_dataset(dataset)
    p = complete(data.synthetic_params, params, f"datasets.{data.name}.synthetic")
    data.synthetic_split_sizes(p)  # fails before anything is written
    cases = data.make_synthetic(raw_dir, seed, p)
    splits = data.synthetic_splits(raw_dir, seed, p)
    with atomic_dir(splits_dir) as tmp:
        for name, items in splits.items():
            write_lines(tmp / f"{name}.list", items)
    return {"dataset": data.name, "seed": int(seed), "params": p, "cases": cases, "splits": splits}
