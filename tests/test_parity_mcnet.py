"""MC-Net parity: one training step of our method against ycwu1997/MC-Net (vectors from
tests/golden/make_mcnet.py; see tests/golden/BASELINES.md).

3D: ``train_mcnet_3d.py`` + ``MCNet3d_v1`` vs our LA config; 2D: ``train_mcnet_2d.py`` + ``MCNet2d_v1`` vs our
ACDC config. Same float16-exact weights, inputs and seeded dropout draws; compared: every loss term, the
total, the consistency weight, every parameter's gradient norm and SGD-update norm, and the BatchNorm
running statistics after the step.
"""

import pytest
import torch

from urpc_mcnet_parity import (assert_norms_close, engine_step, load_case, load_reference_weights, mcnet2d_pairs,
                               mcnet3d_pairs, method_for, norms_by_reference, prefixed)

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
    record, tensors = load_case(golden_dir, f"mcnet_{case}")
    method, cfg = method_for(dataset, "mcnet", network(record))
    pairs = pairs_of(method.network)
    load_reference_weights(method.network, pairs, prefixed(tensors, "weights."))
    before = {k: p.detach().clone() for k, p in method.named_parameters()}
    inputs = prefixed(tensors, "input.")
    output, total, grads = engine_step(method, inputs["image"], inputs["label"][:record["n_labelled"]],
                                       record["iter_num_before_step"], record["step_seed"], cfg["training"])
    updates = {k: p.detach() - before[k] for k, p in method.named_parameters()}
    return {"case": case, "record": record, "tensors": tensors, "method": method, "pairs": pairs, "output": output,
            "total": total, "grads": grads, "updates": updates, "training": cfg["training"]}


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
    ours = {r: step["method"].network.state_dict()[o] for r, o in step["pairs"]}
    expected = prefixed(step["tensors"], "buffers_after.")
    assert expected
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert int(ours[key]) == int(value), key
