"""Benchmark: ``binary_metrics`` against the medpy calls it replaces, side by side on the same masks.

Until 2026-11-30 ``binary_metrics`` called medpy's ``dc``, ``jc``, ``hd95`` and ``asd`` on the whole image
(three surface-distance passes: ``hd95`` computes both directions, ``asd`` pred -> gt again). Now it computes
each direction once on the masks' joint bounding box. This times both, alternating, on the synthetic
generator's label maps at real sizes (ACDC: 10 slices of 216-256 x 216-256, three classes; LA: 175 x 132 x 88) with a
prediction made of the label shifted by ``--shift`` voxels in-plane (compact masks: the bounding box is a
small part of the image), checks that every value is equal, and prints the medians per case (all classes),
the two taking turns at going first.

    .venv/bin/python benchmarks/metrics_time.py [--cases 3] [--repeats 5] [--shift 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssnet.evaluation.metrics import binary_metrics  # noqa: E402


def medpy_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    """What ``binary_metrics`` computed before: medpy's four calls on the whole image."""
    from medpy.metric import binary as mb

    return {"dice": mb.dc(pred, gt), "jaccard": mb.jc(pred, gt), "hd95": mb.hd95(pred, gt), "asd": mb.asd(pred, gt)}


def label_maps(dataset: str, cases: int, root: Path) -> list[np.ndarray]:
    """Label volumes of ``cases`` synthetic cases at the real data's sizes, read back from the raw files."""
    import SimpleITK as sitk

    from ssnet.data.synthetic import make_synthetic_acdc, make_synthetic_la

    if dataset == "ACDC":
        make_synthetic_acdc(root / "acdc", n_patients=cases, n_slices=10, size_hw=(216, 256))
        files = sorted((root / "acdc").rglob("*_frame??_gt.nii.gz"))[:cases]
    else:
        make_synthetic_la(root / "la", n_cases=cases, size_xy=(175, 132), n_slices=88)
        files = sorted((root / "la").rglob("laendo.nrrd"))
    return [sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in files]


def timed(function, pairs: list) -> tuple[float, list]:
    start = time.perf_counter()
    values = [function(pred, gt) for pred, gt in pairs]
    return time.perf_counter() - start, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shift", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in ("ACDC", "LA"):
            for i, label in enumerate(label_maps(dataset, args.cases, Path(tmp))):
                classes = [c for c in np.unique(label) if c > 0]
                pairs = [(np.roll(label == c, args.shift, axis=-1), label == c) for c in classes]
                times, values = {medpy_metrics: [], binary_metrics: []}, {}
                for repeat in range(args.repeats):
                    order = list(times) if repeat % 2 == 0 else list(times)[::-1]  # each goes first in turn
                    for function in order:
                        seconds, values[function] = timed(function, pairs)
                        times[function].append(seconds)
                before, after = values[medpy_metrics], values[binary_metrics]
                old, new = times[medpy_metrics], times[binary_metrics]
                same = all(b[k] == a[k] for b, a in zip(before, after) for k in before[0])
                o, n = statistics.median(old), statistics.median(new)
                print(f"{dataset} case {i} {label.shape} classes {len(classes)}: medpy {o:.3f} s, "
                      f"binary_metrics {n:.4f} s, {o / n:.0f}x, values equal: {same}", flush=True)
                if not same:
                    raise SystemExit(f"{dataset} case {i}: values differ: {before} vs {after}")


if __name__ == "__main__":
    main()
