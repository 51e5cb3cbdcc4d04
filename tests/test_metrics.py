"""Metrics: medpy parity, golden reference values, hand-computed values and degenerate-mask policy."""

import math

import numpy as np
import pytest
from medpy.metric import binary as mb

from ssnet.evaluation.metrics import (
    binary_metrics,
    bounding_box,
    case_metrics_multiclass,
    count_empty_predictions,
    mean_metrics,
    reference_acdc_test_metrics,
    reference_metric_percase,
    reference_val_2d_metrics,
    reference_val_2d_percase,
    surface_distances,
)

REL = 1e-9


def _rel_close(values, expected):
    assert len(values) == len(expected)
    for a, b in zip(values, expected):
        assert math.isclose(a, b, rel_tol=REL, abs_tol=0.0 if b else 1e-12), (values, expected)


@pytest.fixture(scope="module")
def metric_pairs(golden_dir, manifest):
    z = np.load(golden_dir / "metrics.npz")
    names = sorted(manifest["cases"]["metrics"]["values"])
    return {n: (z[f"{n}_pred"], z[f"{n}_gt"]) for n in names}


def test_metrics_golden_variants(metric_pairs, manifest):
    values = manifest["cases"]["metrics"]["values"]
    for name, (pred, gt) in metric_pairs.items():
        for variant in ("test_3d_patch", "metrics_py", "test_ACDC"):
            _rel_close(reference_metric_percase(pred, gt), values[name][variant])
        _rel_close(reference_val_2d_percase(pred, gt), values[name]["val_2d"])


def test_metrics_match_medpy(metric_pairs):
    for pred, gt in metric_pairs.values():
        m = binary_metrics(pred, gt)
        _rel_close(
            [m["dice"], m["jaccard"], m["hd95"], m["asd"]],
            [mb.dc(pred, gt), mb.jc(pred, gt), mb.hd95(pred, gt), mb.asd(pred, gt)],
        )
        assert m["empty_prediction"] is False
        spacing = (0.625, 0.625, 1.25)
        ms = binary_metrics(pred, gt, spacing=spacing)
        _rel_close(
            [ms["dice"], ms["hd95"], ms["asd"]],
            [mb.dc(pred, gt), mb.hd95(pred, gt, voxelspacing=spacing), mb.asd(pred, gt, voxelspacing=spacing)],
        )


def _random_offset(rng, shape, frame) -> tuple[int, ...]:
    return tuple(int(rng.integers(0, f - s + 1)) for s, f in zip(shape, frame))


def _random_mask(rng, shape, frame, offset):
    """A smoothed-noise mask of ``shape`` at ``offset`` in a zero array of ``frame`` (a larger image: the
    metrics crop to the masks' bounding box); sometimes a single voxel."""
    from scipy import ndimage

    mask = np.zeros(frame, dtype=bool)
    region = tuple(slice(o, o + s) for o, s in zip(offset, shape))
    if rng.random() < 0.1:
        mask[tuple(int(rng.integers(r.start, r.stop)) for r in region)] = True
        return mask
    field = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(0.5, 3))
    mask[region] = field > rng.uniform(0, 0.8) * field.std()
    return mask


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_surface_metrics_equal_medpy_on_random_masks(ndim):
    """hd95 and asd from the cropped, once-computed surface distances are medpy's values exactly (voxel
    units and anisotropic spacing; bool, integer and float masks), for masks filling the image, sharing a
    part of it or lying apart in it."""
    rng = np.random.default_rng(ndim)
    checked = 0
    for trial in range(40):
        shape = tuple(int(s) for s in rng.integers(3, 20, ndim))
        frame = shape if trial % 3 == 0 else tuple(s + int(rng.integers(0, 15)) for s in shape)
        shared = _random_offset(rng, shape, frame)
        offsets = [_random_offset(rng, shape, frame) for _ in range(2)] if trial % 3 == 2 else [shared] * 2
        pred, gt = (_random_mask(rng, shape, frame, offset) for offset in offsets)
        if not pred.any() or not gt.any():
            continue
        dtype = (bool, np.uint8, np.float32)[trial % 3]
        for spacing in (None, tuple(rng.uniform(0.3, 3.0, ndim))):
            m = binary_metrics(pred.astype(dtype), gt.astype(dtype), spacing)
            assert m["hd95"] == mb.hd95(pred, gt, voxelspacing=spacing), (shape, frame, spacing)
            assert m["asd"] == mb.asd(pred, gt, voxelspacing=spacing), (shape, frame, spacing)
            checked += 1
    assert checked >= 40  # not vacuous: most trials give two non-empty masks


def test_surface_distances_both_directions():
    """Hand-computed: a 3x3 square against one pixel at its centre (2D, voxel units)."""
    square = np.zeros((9, 9), dtype=bool)
    square[2:5, 3:6] = True
    centre = np.zeros_like(square)
    centre[3, 4] = True
    to_centre, to_square = surface_distances(square, centre)
    # the square's border is its 8 outer pixels (the centre erodes away): 4 at distance 1, 4 at sqrt(2)
    assert sorted(to_centre) == pytest.approx([1, 1, 1, 1, math.sqrt(2)] + [math.sqrt(2)] * 3)
    assert list(to_square) == [1.0]  # the lone pixel is its own border; nearest square border pixel: 1 away


def test_surface_distances_read_masks_as_nonzero_and_refuse_empty_ones():
    pred = np.zeros((6, 7), dtype=np.uint8)
    gt = pred.copy()
    pred[1:3, 1:4] = 2
    gt[2:5, 2:6] = 1
    for got, expected in zip(surface_distances(pred, gt), surface_distances(pred > 0, gt > 0)):
        assert np.array_equal(got, expected)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(pred, np.zeros_like(gt))
    with pytest.raises(ValueError, match="empty mask"):
        bounding_box(np.zeros((3, 3), dtype=bool))


def test_bounding_box():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1, 2, 3] = mask[3, 5, 0] = True
    assert bounding_box(mask) == (slice(1, 4), slice(2, 6), slice(0, 4))
    assert bounding_box(np.ones((2, 3), dtype=bool)) == (slice(0, 2), slice(0, 3))


def test_asd_is_one_directional():
    pred = np.zeros((8, 8, 8), dtype=bool)
    gt = pred.copy()
    pred[2:6, 2:6, 2:6] = True  # 4^3 cube
    gt[2:6, 2:6, 2:4] = True  # its lower half (4 x 4 x 2 slab)
    m = binary_metrics(pred, gt)
    # |A & B| = 32, |A| = 64, |B| = 32
    assert m["dice"] == pytest.approx(2 * 32 / 96, rel=REL)
    assert m["jaccard"] == pytest.approx(32 / 64, rel=REL)
    # pred surface (56 voxels) to gt surface: 28 at 0, 12 at 1, 16 at 2 -> 44 / 56
    assert m["asd"] == pytest.approx(44 / 56, rel=REL)
    assert m["hd95"] == pytest.approx(2.0, rel=REL)
    assert m["asd"] != pytest.approx(mb.assd(pred, gt))  # assd would be 48 / 88


def test_hand_computed_distances_and_spacing():
    pred = np.zeros((6, 7), dtype=bool)
    gt = pred.copy()
    pred[0, 0] = True
    gt[3, 4] = True
    m = binary_metrics(pred, gt)
    assert (m["dice"], m["jaccard"]) == (0.0, 0.0)
    assert m["hd95"] == pytest.approx(5.0, rel=REL) and m["asd"] == pytest.approx(5.0, rel=REL)
    ms = binary_metrics(pred, gt, spacing=(2.0, 1.0))  # physical units: sqrt(6^2 + 4^2)
    assert ms["hd95"] == pytest.approx(math.sqrt(52), rel=REL) and ms["asd"] == pytest.approx(math.sqrt(52))
    with pytest.raises(ValueError):
        binary_metrics(pred, gt, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        binary_metrics(pred, gt[:5])


def test_identical_masks():
    a = np.zeros((10, 10, 10), dtype=np.uint8)
    a[2:7, 3:8, 1:4] = 1
    m = binary_metrics(a, a)
    assert (m["dice"], m["jaccard"], m["hd95"], m["asd"]) == (1.0, 1.0, 0.0, 0.0)


def test_empty_prediction_policy():
    gt = np.zeros((5, 5, 5), dtype=bool)
    gt[1:3, 1:3, 1:3] = True
    pred = np.zeros_like(gt)
    m = binary_metrics(pred, gt)
    assert m["empty_prediction"] is True
    assert (m["dice"], m["jaccard"], m["hd95"], m["asd"]) == (0.0, 0.0, 0.0, 0.0)
    assert reference_metric_percase(pred, gt) == (0.0, 0.0, 0.0, 0.0)
    assert reference_val_2d_percase(pred, gt) == (0.0, 0.0)
    both = binary_metrics(pred, pred)  # reference policy applies whatever the ground truth
    assert both["empty_prediction"] and both["dice"] == 0.0
    assert count_empty_predictions([m, both, binary_metrics(gt, gt)]) == 2


def test_empty_ground_truth_does_not_crash():
    pred = np.zeros((5, 5, 5), dtype=bool)
    pred[2, 2, 2] = True
    m = binary_metrics(pred, np.zeros_like(pred))
    assert m["empty_ground_truth"] is True and m["empty_prediction"] is False
    assert (m["dice"], m["jaccard"]) == (0.0, 0.0)
    assert math.isnan(m["hd95"]) and math.isnan(m["asd"])


def test_inputs_not_modified():
    pred = np.array([[0, 2], [3, 0]], dtype=np.uint8)
    gt = np.array([[0, 1], [0, 5]], dtype=np.uint8)
    p0, g0 = pred.copy(), gt.copy()
    binary_metrics(pred, gt)
    np.testing.assert_array_equal(pred, p0)
    np.testing.assert_array_equal(gt, g0)


def test_acdc_golden_metrics(golden_dir, manifest):
    case = manifest["cases"]["acdc_test"]
    z = np.load(golden_dir / "acdc_test.npz")
    pred, label = z["prediction"], z["label"]
    classes = tuple(range(1, len(case["metrics_test_ACDC"]) + 1))
    for ours, ref in zip(reference_acdc_test_metrics(pred, label, classes), case["metrics_test_ACDC"]):
        _rel_close(ours, ref)
    for ours, ref in zip(reference_val_2d_metrics(pred, label, len(classes) + 1), case["metrics_val_2d"]):
        _rel_close(ours, ref)
    per_class = case_metrics_multiclass(pred, label, classes)
    assert sorted(per_class) == list(classes)
    for c, ref in zip(classes, case["metrics_test_ACDC"]):
        m = per_class[c]
        _rel_close([m["dice"], m["jaccard"], m["hd95"], m["asd"]], ref)
    mean = mean_metrics(per_class.values())
    _rel_close([mean["dice"]], [float(np.mean([r[0] for r in case["metrics_test_ACDC"]]))])


def test_class_absent_from_prediction():
    gt = np.zeros((4, 6, 6), dtype=np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    gt[1:3, 3:5, 3:5] = 2
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)
    out = case_metrics_multiclass(pred, gt, classes=(1, 2))
    assert out[1]["dice"] == 1.0 and not out[1]["empty_prediction"]
    assert out[2]["empty_prediction"] and out[2]["hd95"] == 0.0
    assert reference_acdc_test_metrics(pred, gt, (1, 2))[1] == (0.0, 0.0, 0.0, 0.0)
