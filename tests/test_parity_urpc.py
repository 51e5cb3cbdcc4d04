"""URPC parity against HiLab-git/SSL4MIS (vectors from tests/golden/make_urpc.py; see tests/golden/BASELINES.md).

- 2D: one training step of ``train_uncertainty_rectified_pyramid_consistency_2D.py`` + ``UNet_URPC`` vs our
  ACDC config: same float16-exact weights, inputs and seeded draws (encoder dropout, the 1/8 element-wise
  dropout, feature dropout's numpy threshold, feature noise); every loss term, the total, the consistency
  weight, every gradient / SGD-update norm and the BatchNorm statistics after the step.
- 3D: ``train_uncertainty_rectified_pyramid_consistency_3D.py`` + ``unet_3D_dv_semi``. Our LA backbone is a
  V-Net, so this covers (a) the loss computation: our ``training_step`` fed the reference's four pyramid
  outputs gives its losses and d loss / d output, and (b) the perturbation design: our 3D network's
  dropouts have the reference's type, rates, places and consumers, and nothing else perturbs it.
"""

import numpy as np
import pytest
import torch

from parity_common import assert_norms_close, fingerprint
from urpc_mcnet_parity import (assert_buffers_after, engine_step, load_case, method_for, norms_by_reference, prefixed,
                               reference_step, urpc2d_pairs)

LOSS_RTOL = 2e-6


# ------------------------------------------------------------------------------------------ 2D
@pytest.fixture(scope="module")
def step2d(golden_dir):
    def network(record):
        return {"channels": record["network"]["feature_chns"], "dropout": record["network"]["dropout"]}

    return reference_step(golden_dir, "urpc_2d", "ACDC", "urpc", network, urpc2d_pairs, "iter_num")


def test_2d_config_matches_the_reference_script(step2d):
    r, p, net = step2d["record"], step2d["method"].params, step2d["method"].network
    assert (p.consistency, p.consistency_rampup, p.rampup_iteration_offset) == (
        r["args"]["consistency"], r["args"]["consistency_rampup"], 0)
    assert step2d["training"]["lr"] == r["lr"] == r["args"]["base_lr"]
    assert (net.perturbation, net.aux_dropout_mode, net.upsample_mode) == ("pyramid", "element", "nearest")


def test_2d_losses(step2d):
    s, logs = step2d["record"]["scalars"], step2d["output"].logs
    assert logs["consistency_weight"] == pytest.approx(s["consistency_weight"], rel=1e-12)
    for ours, ref in (("loss_sup", "supervised_loss"), ("loss_consistency", "consistency_loss"),
                      ("loss_ce", "loss_ce"), ("loss_dice", "loss_dice")):
        assert logs[ours] == pytest.approx(s[ref], rel=LOSS_RTOL), ours
    assert step2d["total"] == pytest.approx(s["loss"], rel=LOSS_RTOL)


def test_2d_gradient_and_update_norms(step2d):
    pairs = step2d["pairs"]
    assert_norms_close(norms_by_reference(step2d["grads"], pairs, "network."), step2d["record"]["grad_norms"])
    updates = {k: v for k, v in norms_by_reference(step2d["updates"], pairs, "network.").items() if v > 0}
    assert_norms_close(updates, step2d["record"]["update_norms"])


def test_2d_batchnorm_statistics_after_the_step(step2d):
    assert_buffers_after(step2d)


# ------------------------------------------------------------------------------------------ 3D
@pytest.fixture(scope="module")
def case3d(golden_dir):
    record, tensors = load_case(golden_dir, "urpc_3d")
    return record, tensors


def test_3d_loss_given_the_reference_pyramid_outputs(case3d):
    """Our training_step on the reference's four outputs (its ramp-up length 400 set; LA's config uses 40)."""
    record, tensors = case3d
    method, cfg = method_for("LA", "urpc", {"n_filters": 2, "dropout": True})
    assert (method.params.consistency, method.params.consistency_rampup) == (record["args"]["consistency"], 40.0)
    method.params.consistency_rampup = record["args"]["consistency_rampup"]
    outputs = [prefixed(tensors, "outputs.")[str(k)].requires_grad_() for k in range(4)]
    method.network.forward_pyramid = lambda image: outputs
    label = prefixed(tensors, "input.")["label"][:record["n_labelled"]]
    image = torch.zeros(outputs[0].shape[0], 1, *outputs[0].shape[2:])
    output, total, _ = engine_step(method, image, label, record["iter_num"], 0, cfg["training"])
    s, logs = record["scalars"], output.logs
    assert logs["consistency_weight"] == pytest.approx(s["consistency_weight"], rel=1e-12)
    for ours, ref in (("loss_sup", "supervised_loss"), ("loss_consistency", "consistency_loss"),
                      ("loss_ce", "loss_ce_aux1"), ("loss_dice", "loss_dice_aux1")):
        assert logs[ours] == pytest.approx(s[ref], rel=LOSS_RTOL), ours
    assert total == pytest.approx(s["loss"], rel=LOSS_RTOL)
    for k, (o, expected) in enumerate(zip(outputs, record["output_grad_fingerprints"])):
        np.testing.assert_allclose(fingerprint(o.grad), expected, rtol=1e-5, atol=1e-6 * expected[0], err_msg=str(k))


def _our_design(net: torch.nn.Module, image: torch.Tensor) -> list[dict]:
    """Our 3D network's stage dropouts described as the generator describes unet_3D_dv_semi's."""
    seen, handles = {}, []
    modules = {"dropout": list(net.stage_dropouts), "stage": list(net.backbone.decoder_stages),
               "up": list(net.backbone.up_convs), "head": list(net.aux_heads) + [net.backbone.out_conv]}
    for kind, mods in modules.items():
        for k, m in enumerate(mods):
            handles.append(m.register_forward_hook(lambda m, i, o, key=(kind, k): seen.__setitem__(key, (i, o))))
    net.train()
    with torch.no_grad():
        net.forward_pyramid(image)
    for h in handles:
        h.remove()
    stages = []
    for k, module in enumerate(net.stage_dropouts):
        d_in, d_out = seen[("dropout", k)]
        stages.append({"type": type(module).__name__, "p": module.p,
                       "takes_stage_output": d_in[0] is seen[("stage", k)][1],
                       "feeds_next_stage": k == 3 or seen[("up", k + 1)][0][0] is d_out,
                       "feeds_side_output": seen[("head", k)][0][0] is d_out})
    return stages


def test_3d_perturbation_design_follows_unet_3d_dv_semi(case3d):
    record, _ = case3d
    method, _ = method_for("LA", "urpc", {"n_filters": 2, "dropout": True})
    net = method.network
    assert net.perturbation == "decoder_dropout" and net.upsample_mode == "trilinear"
    reference = [{k: v for k, v in stage.items() if k != "scale"} for stage in record["design"]["stages"]]
    assert _our_design(net, torch.randn(2, 1, 32, 32, 16)) == reference
    assert not {"FeatureNoise"} & set(record["design"]["module_types"])
    # side heads: 1x1x1 conv then trilinear upsampling, as UnetDsv3
    assert all("kernel_size=(1, 1, 1)" in head[0] for head in record["design"]["side_heads"].values())
    assert all(h.kernel_size == (1, 1, 1) for h in net.aux_heads)
    # nothing else perturbs: with every dropout off, two training-mode passes with other seeds agree
    quiet, _ = method_for("LA", "urpc", {"n_filters": 2, "dropout": False},
                          {f"stage_dropout_{s}": 0.0 for s in ("1_8", "1_4", "1_2", "full")})
    x = torch.randn(2, 1, 32, 32, 16)
    torch.manual_seed(0)
    np.random.seed(0)
    a = quiet.network.forward_pyramid(x)
    torch.manual_seed(1)
    np.random.seed(1)
    b = quiet.network.forward_pyramid(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
