"""MC-Net parity: one training step of our method against ycwu1997/MC-Net (vectors from
tests/golden/make_mcnet.py; see tests/golden/BASELINES.md).

3D: ``train_mcnet_3d.py`` + ``MCNet3d_v1`` vs our LA config; 2D: ``train_mcnet_2d.py`` + ``MCNet2d_v1`` vs our
ACDC config. Same float16-exact weights, inputs and seeded dropout draws; compared: every loss term, the
total, the consistency weight, every parameter's gradient norm and SGD-update norm, and the BatchNorm
running statistics after the step.
"""

import pytest

from parity_common import assert_norms_close
from urpc_mcnet_parity import assert_buffers_after, mcnet2d_pairs, mcnet3d_pairs, norms_by_reference, reference_step

LOSS_RTOL = 2e-6
CASES = {
    "3d": ("LA", lambda r: {"n_filters": r["network"]["n_filters"], "dropout": r["network"]["has_dropout"]},
           mcnet3d_pairs),
    "2d": ("ACDC", lambda r: {"channels": r["network"]["feature_chns"], "dropout": r["network"]["dropout"]},
           mcnet2d_pairs),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def step(request, golden_dir):
    case = request.param
    dataset, network, pairs_of = CASES[case]
    return {"case": case, **reference_step(golden_dir, f"mcnet_{case}", dataset, "mcnet", network, pairs_of,
                                           "iter_num_before_step")}


def test_config_matches_the_reference_script(step):
    r, p = step["record"], step["method"].params
    assert (p.consistency, p.consistency_rampup, p.temperature, p.dice_weight, p.ce_weight) == (
        r["args"]["consistency"], r["args"]["consistency_rampup"], r["args"]["temperature"], r["args"]["lamda"], 0.0)
    assert step["training"]["lr"] == r["lr"] == r["args"]["base_lr"]
    assert step["method"].supervised_dice == ("binary_foreground" if step["case"] == "3d" else "multiclass_halved")


def test_losses(step):
    s, logs = step["record"]["scalars"], step["output"].logs
    assert logs["consistency_weight"] == pytest.approx(s["consistency_weight"], rel=1e-12)
    assert logs["loss_dice"] == pytest.approx(s["loss_seg_dice"], rel=LOSS_RTOL)
    assert logs["loss_ce"] == pytest.approx(s["loss_seg"], rel=LOSS_RTOL)
    assert logs["loss_consistency"] == pytest.approx(s["loss_consist"], rel=LOSS_RTOL)
    assert step["total"] == pytest.approx(s["loss"], rel=LOSS_RTOL)


def test_gradient_norms(step):
    assert_norms_close(norms_by_reference(step["grads"], step["pairs"], "network."), step["record"]["grad_norms"])


def test_sgd_update_norms(step):
    ours = {k: v for k, v in norms_by_reference(step["updates"], step["pairs"], "network.").items() if v > 0}
    assert_norms_close(ours, step["record"]["update_norms"])


def test_batchnorm_statistics_after_the_step(step):
    assert_buffers_after(step)
