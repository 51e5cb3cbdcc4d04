"""The labelled-only lower bound against its reference code: one engine training step in 3D (yulequan/UA-MT
train_LA.py: 0.5 (CE + foreground Dice)) and 2D (SSL4MIS train_fully_supervised_2D.py: 0.5 (CE + Dice
over all classes)); plus the Dice-form switch. Vectors: tests/golden/supervised_{3d,2d}.npz +
supervised_manifest.json (tests/golden/BASELINES.md, "UA-MT and supervised")."""

import numpy as np
import pytest
import torch

from uamt_parity import assert_buffer_stats, assert_student_step, case_method, engine_step, load_case

LOSS = dict(rtol=1e-6, atol=1e-7)
GRAD = dict(rtol=1e-5, atol=1e-7)
WEIGHT = dict(rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["supervised_3d", "supervised_2d"])
def test_one_step_matches_reference(case, golden_dir, monkeypatch):
    meta, arrays = load_case(golden_dir, "supervised", case)
    method, training = case_method(meta, "supervised")
    assert method.supervised_dice == ("binary_foreground" if meta["dim"] == 3 else "multiclass")
    logs = engine_step(method, training, meta, arrays, monkeypatch)
    for key in ("loss_ce", "loss_dice", "loss"):
        np.testing.assert_allclose(logs[key], meta["scalars"][key], **LOSS, err_msg=key)
    assert_student_step(method.network, meta, arrays, "weights", GRAD, WEIGHT)
    assert_buffer_stats(method.network, meta, arrays, "student_after", "buffers")


def test_multiclass_dice_switch_in_3d(golden_dir):
    """``supervised_dice: multiclass`` keeps the earlier LA form (mean over both classes, background included);
    the default 3D form is the foreground channel's Dice alone."""
    meta, _ = load_case(golden_dir, "supervised", "supervised_3d")
    method, _ = case_method(meta, "supervised", supervised_dice="multiclass")
    probs = torch.softmax(torch.randn(2, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    label = (probs[:, 1] > 0.6).long()

    def squared_dice(p, t):
        t = t.float()
        return 1 - (2 * (p * t).sum() + 1e-5) / ((p * p).sum() + (t * t).sum() + 1e-5)

    foreground = squared_dice(probs[:, 1], label == 1)
    torch.testing.assert_close(method.dice(probs, label), (squared_dice(probs[:, 0], label == 0) + foreground) / 2)
    method.supervised_dice = "binary_foreground"
    torch.testing.assert_close(method.dice(probs, label), foreground)
