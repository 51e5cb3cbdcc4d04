"""Segmentation metrics with the reference's conventions (protocol section 9).

``binary_metrics`` gives ``medpy.metric.binary`` ``dc``, ``jc``, ``hd95`` and ``asd``. ``asd`` is medpy's
ONE-directional average surface distance ``asd(result=pred, reference=gt)``, not the symmetric ``assd``.
With ``spacing=None`` distances are in voxels (the paper's units); with a spacing tuple they are in
physical units (an extra column set, never a replacement).

The surface distances are medpy's (``binary.__surface_distances``: the 1-voxel borders left by a
connectivity-1 erosion, scipy's exact Euclidean distance transform of the other mask's border), computed
once per direction (medpy's ``hd95`` and ``asd`` compute pred -> gt twice) and on the two masks' joint
bounding box instead of the whole image, which changes no erosion and no distance: the results are medpy's
values (the same distances in the same order; tests/test_metrics.py checks equality).

Policy for degenerate masks:

* Empty prediction (the reference policy, whatever the ground truth): dice, jaccard, hd95 and asd are all
  0 and ``empty_prediction`` is True. This flatters 95HD/ASD, so callers should report how many cases hit
  it (``count_empty_predictions``).
* Empty ground truth with a non-empty prediction (never happens in the reference test sets; medpy raises
  there): dice and jaccard are 0 (nothing of the prediction is right) and hd95/asd are NaN (undefined),
  with ``empty_ground_truth`` True, so that the case is visible instead of silently averaged.

The ``reference_*`` helpers give the official scripts' tuples/lists, built on ``binary_metrics``:
``test_3d_patch.calculate_metric_percase`` / ``utils/metrics.py`` / ``test_ACDC.calculate_metric_percase``
return (dc, jc, hd95, asd); ``val_2d.calculate_metric_percase`` returns (dice, hd95), (0, 0) when the
prediction is empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from medpy.metric import binary as _mb
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "bounding_box",
    "case_metrics_multiclass",
    "count_empty_predictions",
    "mean_metrics",
    "reference_acdc_test_metrics",
    "reference_metric_percase",
    "reference_val_2d_metrics",
    "reference_val_2d_percase",
    "surface_distances",
]

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


def binary_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> dict:
    """Dice, Jaccard, 95HD and (one-directional) ASD of two binary masks; see the module policy.

    Returns ``{"dice", "jaccard", "hd95", "asd"}`` as Python floats plus the flags ``empty_prediction`` and
    ``empty_ground_truth``. Inputs are read as ``mask != 0`` and never modified.
    """
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != pred.ndim:
            raise ValueError(f"spacing {spacing} does not match a {pred.ndim}D mask")
    empty_pred, empty_gt = not pred.any(), not gt.any()
    result = {"empty_prediction": empty_pred, "empty_ground_truth": empty_gt}
    if empty_pred:
        result.update(dice=0.0, jaccard=0.0, hd95=0.0, asd=0.0)
    elif empty_gt:
        result.update(dice=0.0, jaccard=0.0, hd95=math.nan, asd=math.nan)
    else:
        to_gt, to_pred = surface_distances(pred, gt, spacing)
        result.update(
            dice=float(_mb.dc(pred, gt)),
            jaccard=float(_mb.jc(pred, gt)),
            hd95=float(np.percentile(np.hstack((to_gt, to_pred)), 95)),  # medpy hd95
            asd=float(to_gt.mean()),  # medpy asd(pred, gt)
        )
    return result


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distances from every border voxel of ``pred`` to ``gt``'s border, and from ``gt``'s to ``pred``'s):
    medpy's ``__surface_distances(pred, gt)`` and ``(gt, pred)`` for two non-empty masks (read as ``!= 0``).

    Computed on the masks' joint bounding box: the erosion treats voxels beyond the array as background
    (scipy's ``border_value`` 0), which the voxels beyond the box are in both masks, and every border voxel
    the distances reach lies in the box.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)  # no copy of boolean masks
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    box = bounding_box(pred | gt)
    pred, gt = pred[box], gt[box]
    footprint = generate_binary_structure(pred.ndim, 1)
    pred_border = pred ^ binary_erosion(pred, structure=footprint, iterations=1)
    gt_border = gt ^ binary_erosion(gt, structure=footprint, iterations=1)
    to_gt = distance_transform_edt(~gt_border, sampling=spacing)[pred_border]
    to_pred = distance_transform_edt(~pred_border, sampling=spacing)[gt_border]
    return to_gt, to_pred


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel of ``mask``; ValueError if it has none."""
    if not mask.any():
        raise ValueError("an empty mask has no bounding box")
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def case_metrics_multiclass(
    pred: np.ndarray, gt: np.ndarray, classes: Iterable[int] = (1, 2, 3), spacing: Sequence[float] | None = None
) -> dict[int, dict]:
    """``binary_metrics(pred == c, gt == c)`` for every class ``c`` (over the whole 3D volume)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    return {int(c): binary_metrics(pred == c, gt == c, spacing) for c in classes}


def mean_metrics(per_item: Iterable[Mapping]) -> dict[str, float]:
    """Plain mean of each metric over cases or classes (empty predictions count as their 0 values)."""
    items = list(per_item)
    if not items:
        raise ValueError("no metrics to average")
    return {k: float(np.mean([m[k] for m in items])) for k in METRIC_NAMES}


def count_empty_predictions(per_item: Iterable[Mapping]) -> int:
    """How many of the metric dicts came from an empty prediction."""
    return sum(bool(m["empty_prediction"]) for m in per_item)


# --------------------------------------------------------------------------------------------------
# Reference-shaped outputs (for parity checks against the official scripts)
# --------------------------------------------------------------------------------------------------


def reference_metric_percase(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float, float]:
    """(dc, jc, hd95, asd) as the official 3D / ACDC test scripts report them (voxel units).

    The official callers substitute (0, 0, 0, 0) for an empty prediction; so does this.
    """
    m = binary_metrics(pred, gt)
    return m["dice"], m["jaccard"], m["hd95"], m["asd"]


def reference_val_2d_percase(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(dice, hd95) as ``val_2d.calculate_metric_percase``: (0, 0) for an empty prediction."""
    m = binary_metrics(pred, gt)
    return m["dice"], m["hd95"]


def reference_acdc_test_metrics(
    pred: np.ndarray, gt: np.ndarray, classes: Iterable[int] = (1, 2, 3)
) -> list[tuple[float, float, float, float]]:
    """``test_ACDC.test_single_volume``'s per-class [dice, jc, hd95, asd] (0s for a class absent from pred)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    return [reference_metric_percase(pred == c, gt == c) for c in classes]


def reference_val_2d_metrics(pred: np.ndarray, gt: np.ndarray, n_classes: int = 4) -> list[tuple[float, float]]:
    """``val_2d.test_single_volume``'s per-class [dice, hd95] for classes 1 .. n_classes - 1."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    return [reference_val_2d_percase(pred == c, gt == c) for c in range(1, n_classes)]
