"""Sliding-window / per-slice inference and largest component: golden parity and invariants.

Shapes, patch sizes and strides are read from the golden files and manifest (the acceptance set uses
other shapes).
"""

import numpy as np
import pytest
import torch

from ssnet.evaluation.inference import (
    largest_component,
    pad_widths,
    predict_volume_2d,
    sliding_window_predict,
    sliding_window_predict_loop,
    window_grid,
    window_starts,
)
from ssnet.networks import build_from_reference_state

NEAR_HALF = 1e-4  # prediction may differ only where |score - 0.5| < this (golden README)
MARGIN = 1e-4  # ACDC: pixels whose softmax top-1 minus top-2 margin is under this may flip


@pytest.fixture(scope="module")
def sw_case(manifest):
    return manifest["cases"]["sliding_window"]


@pytest.fixture(scope="module")
def sw_arrays(golden_dir):
    return dict(np.load(golden_dir / "sliding_window.npz"))


@pytest.fixture(scope="module")
def small_vnet(golden_dir, sw_case):
    state = torch.load(golden_dir / sw_case["files"]["model_state"], weights_only=True)
    net, _heads = build_from_reference_state("vnet", state)  # n_filters etc. from the state's shapes
    return net.eval()


@pytest.fixture(scope="module")
def unet(golden_dir, manifest):
    state = torch.load(golden_dir / manifest["cases"]["acdc_test"]["files"]["model_state"], weights_only=True)
    net, _heads = build_from_reference_state("unet", state)
    return net.eval()


def _sw_kwargs(sw_case):
    return dict(
        patch=tuple(sw_case["patch_size"]),
        stride_xy=sw_case["stride_xy"],
        stride_z=sw_case["stride_z"],
        n_classes=sw_case["num_classes"],
    )


# ---------------------------------------------------------------------------------------------- geometry


def test_window_starts_count_and_clamp():
    # ceil((size - patch) / stride) + 1 windows, last one clamped to the border
    assert window_starts(175, 112, 18) == [0, 18, 36, 54, 63]
    assert window_starts(88, 80, 4) == [0, 4, 8]
    assert window_starts(112, 112, 18) == [0]
    assert window_starts(113, 112, 18) == [0, 1]
    assert len(window_grid((175, 132, 88), (112, 112, 80), 18, 4)) == 5 * 3 * 3
    with pytest.raises(ValueError):
        window_starts(10, 12, 4)


def test_pad_widths_reference_convention():
    # pad // 2 before, the remainder after; no padding on axes at least as large as the patch
    assert pad_widths((40, 28, 20), (32, 32, 16)) == ((0, 0), (2, 2), (0, 0))
    assert pad_widths((10, 27, 5), (12, 32, 16)) == ((1, 1), (2, 3), (5, 6))


# ---------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("run", ["nopad", "pad"])
def test_sliding_window_golden(run, sw_case, sw_arrays, small_vnet):
    image = sw_arrays[f"{run}_image"]
    ref_pred, ref_score = sw_arrays[f"{run}_prediction"], sw_arrays[f"{run}_score_map"]
    assert list(image.shape) == sw_case["runs"][run]["image_shape"]
    pred, prob = sliding_window_predict(small_vnet, image, batch_size=3, **_sw_kwargs(sw_case))
    assert pred.shape == prob.shape == image.shape
    assert prob.dtype == np.float32
    for channel in ref_score:  # every reference channel holds the foreground probability
        np.testing.assert_allclose(prob, channel, rtol=1e-5, atol=1e-6)
    ambiguous = np.abs(ref_score[0] - 0.5) < NEAR_HALF
    np.testing.assert_array_equal(pred[~ambiguous], ref_pred[~ambiguous])


@pytest.mark.parametrize("run", ["nopad", "pad"])
def test_batched_equals_loop(run, sw_case, sw_arrays, small_vnet):
    image = sw_arrays[f"{run}_image"]
    kw = _sw_kwargs(sw_case)
    loop_pred, loop_prob = sliding_window_predict_loop(small_vnet, image, **kw)
    n_windows = len(window_grid(np.add(image.shape, [sum(w) for w in pad_widths(image.shape, kw["patch"])]),
                                kw["patch"], kw["stride_xy"], kw["stride_z"]))
    for bs in (1, 4, n_windows + 5):
        pred, prob = sliding_window_predict(small_vnet, image, batch_size=bs, **kw)
        np.testing.assert_allclose(prob, loop_prob, rtol=1e-5, atol=1e-6)
        ambiguous = np.abs(loop_prob - 0.5) < NEAR_HALF
        np.testing.assert_array_equal(pred[~ambiguous], loop_pred[~ambiguous])


def test_sliding_window_batches_windows(sw_case, sw_arrays, small_vnet):
    """Windows reach the model in stacks of batch_size, not one forward per window."""
    image = sw_arrays["nopad_image"]
    kw = _sw_kwargs(sw_case)
    sizes = []
    handle = small_vnet.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        sliding_window_predict(small_vnet, image, batch_size=4, **kw)
    finally:
        handle.remove()
    n = len(window_grid(image.shape, kw["patch"], kw["stride_xy"], kw["stride_z"]))
    assert sum(sizes) == n
    assert all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def test_sliding_window_accepts_plain_logits_and_restores_mode(sw_case, sw_arrays, small_vnet):
    class LogitsOnly(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[0]

    image = sw_arrays["pad_image"]
    wrapped = LogitsOnly(small_vnet).train()
    pred, prob = sliding_window_predict(wrapped, image, batch_size=2, **_sw_kwargs(sw_case))
    assert wrapped.training and small_vnet.training  # previous mode restored ...
    small_vnet.eval()
    ref_pred, ref_prob = sliding_window_predict(small_vnet, image, batch_size=2, **_sw_kwargs(sw_case))
    np.testing.assert_array_equal(prob, ref_prob)  # ... and the prediction ran in eval mode
    with pytest.raises(ValueError, match="channels"):
        sliding_window_predict(small_vnet, image, batch_size=2, **{**_sw_kwargs(sw_case), "n_classes": 3})


def test_largest_component_golden(sw_arrays, sw_case):
    largest = largest_component(sw_arrays["cc_mask"])
    assert largest.dtype == bool
    np.testing.assert_array_equal(largest, sw_arrays["cc_largest"])
    assert largest.sum() == sw_case["getLargestCC"]["largest_voxels"]


def test_largest_component_full_connectivity_and_empty():
    mask = np.zeros((9, 9, 9), dtype=np.uint8)
    mask[0:2, 0:2, 0:2] = 1  # 8 voxels
    mask[2, 2, 2] = 1  # touches the first block at a corner only -> same component (9)
    mask[5:9, 5:7, 5:6] = 1  # 8 voxels, separate
    out = largest_component(mask)
    assert out.sum() == 9 and out[2, 2, 2] and not out[5, 5, 5]
    empty = largest_component(np.zeros((4, 5, 6), dtype=bool))
    assert empty.shape == (4, 5, 6) and not empty.any()
    flat = np.zeros((5, 5), dtype=bool)
    flat[0, 0] = flat[1, 1] = flat[4, 4] = True  # 2D: diagonal neighbours connect
    assert largest_component(flat).sum() == 2


# ---------------------------------------------------------------------------------------------- ACDC 2D


def test_predict_volume_2d_golden(golden_dir, unet):
    z = np.load(golden_dir / "acdc_test.npz")
    pred = predict_volume_2d(unet, z["image"], batch_size=2)
    assert pred.dtype == np.uint8 and pred.shape == z["label"].shape
    flippable = z["prediction_softmax_margin"] < MARGIN
    np.testing.assert_array_equal(pred[~flippable], z["prediction"][~flippable])


def test_predict_volume_2d_batch_invariant(golden_dir, unet):
    image = np.load(golden_dir / "acdc_test.npz")["image"]
    one = predict_volume_2d(unet, image, batch_size=1)
    many = predict_volume_2d(unet, image, batch_size=len(image) + 3)
    margin = np.load(golden_dir / "acdc_test.npz")["prediction_softmax_margin"]
    np.testing.assert_array_equal(one[margin >= MARGIN], many[margin >= MARGIN])


# ------------------------------------------------------------------------------------ channels-last


def test_channels_last_network_predicts_the_golden_volumes(sw_case, sw_arrays, small_vnet, golden_dir, unet):
    """A network moved to channels-last (evaluation with ``channels_last: true``): the batches follow its
    layout and the reference predictions come out (the same tolerances as the contiguous golden tests)."""
    import copy

    from ssnet.evaluation.inference import _input_layout

    vnet = copy.deepcopy(small_vnet).to(memory_format=torch.channels_last_3d)
    assert _input_layout(vnet) == torch.channels_last_3d and _input_layout(small_vnet) == torch.contiguous_format
    image, ref_score = sw_arrays["pad_image"], sw_arrays["pad_score_map"]
    pred, prob = sliding_window_predict(vnet, image, batch_size=3, **_sw_kwargs(sw_case))
    np.testing.assert_allclose(prob, ref_score[0], rtol=1e-5, atol=1e-6)
    ambiguous = np.abs(ref_score[0] - 0.5) < NEAR_HALF
    np.testing.assert_array_equal(pred[~ambiguous], sw_arrays["pad_prediction"][~ambiguous])
    unet_cl = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    assert _input_layout(unet_cl) == torch.channels_last
    z = np.load(golden_dir / "acdc_test.npz")
    pred2d = predict_volume_2d(unet_cl, z["image"], batch_size=2)
    flippable = z["prediction_softmax_margin"] < MARGIN
    np.testing.assert_array_equal(pred2d[~flippable], z["prediction"][~flippable])
