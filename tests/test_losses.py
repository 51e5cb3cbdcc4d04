"""Dice-family losses and ramps: golden parity and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from ssnet import losses, ramps


@pytest.fixture(scope="module")
def arrays(golden_dir):
    return {k: torch.from_numpy(v) for k, v in np.load(golden_dir / "losses.npz").items()}


def _close(value, expected):
    assert abs(float(value) - expected) <= 1e-6


def test_binary_dice_golden(arrays, manifest):
    s = manifest["cases"]["losses"]["scalars"]
    _close(losses.binary_dice_loss(arrays["binary_pred"], arrays["binary_target"]), s["binary_dice_bool_target"])
    _close(
        losses.binary_dice_loss(arrays["binary_pred"], arrays["binary_target"].float()), s["binary_dice_float_target"]
    )
    _close(
        losses.binary_dice_loss(arrays["two_channel_pred"], arrays["two_channel_target"]), s["binary_dice_two_channel"]
    )
    _close(losses.binary_dice_loss(torch.zeros(3, 4), torch.zeros(3, 4)), s["binary_dice_empty"])


def test_dice_loss_golden(arrays, manifest):
    case = manifest["cases"]["losses"]
    s = case["scalars"]
    probs, logits, target = arrays["dice_probs"], arrays["dice_logits"], arrays["dice_target"]
    n = probs.shape[1]
    _close(losses.dice_loss(probs, target, n), s["dice4_softmax_false"])
    _close(losses.dice_loss(logits, target, n, softmax=True), s["dice4_softmax_true"])
    _close(losses.dice_loss(probs, target, n, weight=case["dice_weight"]), s["dice4_weighted"])
    _close(losses.dice_loss(probs, arrays["dice_target_no3"], n), s["dice4_target_missing_class3"])
    _close(losses.soft_dice_loss(probs, arrays["softdice_target"]), s["softdice4"])


def test_dice_hand_computed():
    # one class channel p = [1, 0.5], t = [1, 1]: 1 - 2*1.5 / (1.25 + 2) = 1 - 3/3.25
    probs = torch.tensor([[[1.0, 0.5]], [[0.0, 0.5]]]).permute(1, 0, 2)  # (B=1, C=2, 2)
    labels = torch.tensor([[0, 0]])
    expected_c0 = 1 - 3.0 / 3.25
    expected_c1 = 1 - (0 + 1e-10) / (0.25 + 0 + 1e-10)
    assert float(losses.dice_loss(probs, labels, 2)) == pytest.approx((expected_c0 + expected_c1) / 2, abs=1e-6)
    assert float(losses.dice_loss(losses.one_hot(labels, 2), labels, 2)) == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="equal shapes"):
        losses.soft_dice_loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))


def test_ramps_golden(manifest):
    r = manifest["cases"]["losses"]["ramps"]
    for name in ("sigmoid_rampup", "linear_rampup", "cosine_rampdown"):
        for current, length, value in r[name]:
            assert getattr(ramps, name)(current, length) == pytest.approx(value, rel=1e-9, abs=0)
    for key, rows in r["sigmoid_rampup_of_iter_div_150"].items():
        if not key.startswith("L"):
            continue
        for iteration, value in rows:
            assert ramps.consistency_weight(iteration, 1.0, int(key[1:])) == pytest.approx(value, rel=1e-9)


def test_consistency_weight_scales_and_saturates():
    assert ramps.consistency_weight(0, 0.1, 200) == pytest.approx(0.1 * math.exp(-5), rel=1e-12)
    assert ramps.consistency_weight(10**6, 0.1, 200) == pytest.approx(0.1)


def test_class_argmax_is_argmax_with_first_index_on_ties():
    from ssnet.losses import class_argmax

    scores = torch.tensor([[[0.2, 0.5, 0.5]], [[0.5, 0.5, 0.1]], [[0.3, 0.0, 0.4]]]).permute(1, 0, 2)  # (1, 3, 3)
    assert class_argmax(scores).tolist() == [[1, 0, 0]]  # column 1: classes 0 and 1 tie -> 0
    random = torch.softmax(torch.randn(2, 4, 5, 6, 7), dim=1)
    assert torch.equal(class_argmax(random), random.argmax(dim=1))
    assert torch.equal(class_argmax(random.contiguous(memory_format=torch.channels_last_3d)), random.argmax(dim=1))
