"""UA-MT against its reference code: one engine training step in 3D (yulequan/UA-MT
train_LA_meanteacher_certainty_unlabel.py) and 2D (SSL4MIS train_uncertainty_aware_mean_teacher_2D.py),
including the teacher's EMA update; plus the teacher's initialisation switch. Vectors:
tests/golden/uamt_{3d,2d}.npz + uamt_manifest.json (tests/golden/BASELINES.md, "UA-MT")."""

import numpy as np
import pytest
import torch

from parity_common import assert_stats, tensor_stats
from uamt_parity import assert_buffer_stats, assert_student_step, case_method, engine_step, load_case, ordered

# Losses agree to float32 rounding; gradients and BatchNorm statistics to summation order.
LOSS = dict(rtol=1e-6, atol=1e-7)
GRAD = dict(rtol=1e-5, atol=1e-7)
WEIGHT = dict(rtol=1e-6, atol=1e-7)


@pytest.fixture(params=["uamt_3d", "uamt_2d"])
def stepped(request, golden_dir, monkeypatch):
    """(case meta, reference arrays, our method after one step, the step's logs, our uncertainty map)."""
    meta, arrays = load_case(golden_dir, "uamt", request.param)
    method, training = case_method(meta, "uamt")
    captured = []
    uncertainty = method.teacher_uncertainty

    def capture(x_u):
        captured.append(uncertainty(x_u))
        return captured[-1]

    monkeypatch.setattr(method, "teacher_uncertainty", capture)
    logs = engine_step(method, training, meta, arrays, monkeypatch)
    return meta, arrays, method, logs, captured[0]


def test_losses_mask_and_weight(stepped):
    meta, arrays, _, logs, uncertainty = stepped
    ref = meta["scalars"]
    np.testing.assert_allclose(uncertainty.numpy(), arrays["uncertainty"], rtol=1e-5, atol=1e-6)
    assert ref["min_gap_to_threshold"] > 1e-5  # no pixel close enough to the threshold to flip
    assert logs["mask_share"] == ref["mask_share"]
    assert logs["consistency_weight"] == pytest.approx(ref["consistency_weight"], rel=1e-12)
    for ours, theirs in [("loss_ce", "loss_ce"), ("loss_dice", "loss_dice"),
                         ("loss_consistency", "consistency_dist"), ("loss", "loss")]:
        np.testing.assert_allclose(logs[ours], ref[theirs], **LOSS, err_msg=ours)


def test_student_gradients_and_sgd_update(stepped):
    meta, arrays, method, _, _ = stepped
    assert_student_step(method.network, meta, arrays, "student", GRAD, WEIGHT)


def test_teacher_ema_update_and_batchnorm(stepped):
    """The teacher after the step: EMA of the parameters (alpha 0.99 at this iteration), BatchNorm running
    statistics from its own 5 forwards (buffers are not averaged); the student's from its one forward."""
    meta, arrays, method, _, _ = stepped
    teacher = ordered(method.teacher, meta["parameters"])
    assert_stats(tensor_stats(teacher), arrays["teacher_after_param_stats"], meta["parameters"], "teacher",
                 **WEIGHT)
    for network, prefix in [(method.teacher, "teacher_after"), (method.network, "student_after")]:
        assert_buffer_stats(network, meta, arrays, prefix, f"{prefix} buffers")


@pytest.mark.parametrize("dim", [3, 2])
def test_teacher_init_separate_by_default_copy_as_switch(dim):
    """``separate`` (reference create_model(ema=True)): the teacher has its own initialisation, drawn after
    the student's, so the student's is the same under both settings; ``copy``: the teacher equals it."""
    from ssnet.datasets import get_dataset
    from ssnet.methods import get_method_class

    cls = get_method_class("uamt")
    assert cls.Params().teacher_init == "separate"
    dataset = get_dataset({3: "LA", 2: "ACDC"}[dim])
    network = ({"arch": "vnet", "n_filters": 2, "dropout": True} if dim == 3
               else {"arch": "unet", "channels": [2, 4, 8, 16, 32]})

    def build(teacher_init, seed=3):
        torch.manual_seed(seed)
        return cls(cls.Params(teacher_init=teacher_init), dataset.spec, network)

    separate, again, copied = build("separate"), build("separate"), build("copy")
    pairs = list(zip(separate.network.parameters(), copied.network.parameters()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert all(torch.equal(a, b) for a, b in zip(separate.teacher.parameters(), again.teacher.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(separate.teacher.parameters(), separate.network.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(copied.teacher.parameters(), copied.network.parameters()))
    assert not any(p.requires_grad for p in separate.teacher.parameters())
