"""SASSNet and DTC: one training step against the reference scripts' own step (golden vectors).

Vectors: ``tests/golden/{sassnet_3d,dtc_3d,dtc_2d}*`` from ``tests/golden/make_sdf_methods.py`` (see
``tests/golden/BASELINES.md``): SASSnet ``train_gan_sdfloss.py``, DTC ``train_la_dtc.py`` and the unmerged
SSL4MIS pull request #37 ``train_dtc_sdf_soft_sig_2D.py``. Our step runs through the engine's
``Trainer.step`` (lr schedule, SGD, ``after_optimizer_step``) on the method class; the reference dropout
masks are replayed by seeding torch as the generator did before its loop body.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssnet.datasets import DatasetSpec
from ssnet.engine import trainer as trainer_module
from ssnet.engine.trainer import Trainer
from ssnet.methods import get_method_class
from ssnet.methods.shared import sdm_target
from ssnet.networks.reference_names import unet_key_pairs, vnet_key_pairs

LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-5
# Gradients that are sums with heavy cancellation (conv biases in front of a BatchNorm, whose true gradient is 0;
# the output heads' biases, a sum over every voxel) move with summation order: up to 1.5e-5 of the network's
# total gradient norm across 1-4 threads and ATEN_CPU_CAPABILITY default/avx2/avx512 (measured).
GRAD_ATOL_OF_TOTAL = 3e-5
# A first Adam step moves each weight by lr * g / (|g| + eps), i.e. by about lr unless |g| is near eps, where
# summation-order noise in g shows: the discriminator's weights after its step are compared at 1% of lr.
ADAM_ATOL_OF_LR = 1e-2
TRAINING = {
    3: {"lr": 0.01, "lr_policy": "step", "lr_step": 2500, "lr_gamma": 0.1, "iterations": 6000},
    2: {"lr": 0.01, "lr_policy": "poly", "poly_power": 0.9, "iterations": 30000},
}
NETWORK = {
    3: {"arch": "vnet", "n_filters": 2, "dropout": True},
    2: {"arch": "unet", "channels": [2, 4, 8, 16, 32], "dropout": [0.05, 0.1, 0.2, 0.3, 0.5]},
}


# ------------------------------------------------------------------------------- loading
def reference_pairs(network) -> list[tuple[str, str]]:
    """(reference key, our key) for the references' dual-head nets: ``out_conv`` = tanh SDM head,
    ``out_conv2`` = segmentation head. 3D ``vnet_sdf.VNet`` has no encoder./decoder. prefixes."""
    backbone = network.backbone
    if network.backbone.__class__.__name__ == "VNet":
        pairs = [(ref.split(".", 1)[1], f"backbone.{ours}") for ref, ours in vnet_key_pairs(backbone)]
        prefix = ""
    else:
        pairs = [(ref, f"backbone.{ours}") for ref, ours in unet_key_pairs(backbone)]
        prefix = "decoder."
    pairs = [(ref, ours) for ref, ours in pairs if ref.split(".")[-2] != "out_conv"]
    for tensor in ("weight", "bias"):
        pairs += [(f"{prefix}out_conv.{tensor}", f"sdm_conv.{tensor}"),
                  (f"{prefix}out_conv2.{tensor}", f"backbone.out_conv.{tensor}")]
    return pairs


def load_case(golden_dir, prefix: str) -> tuple[dict, dict, dict]:
    record = json.loads((golden_dir / f"{prefix}.json").read_text())
    arrays = dict(np.load(golden_dir / f"{prefix}.npz"))
    state = torch.load(golden_dir / f"{prefix}_state.pt", weights_only=True)
    return record, arrays, state


def build(method_type: str, dim: int, record: dict, state: dict, **params):
    """Our method with the reference weights (every reference tensor used exactly once)."""
    cls = get_method_class(method_type)
    n_classes = 2 if dim == 3 else 4
    method = cls(cls.Params(**params), DatasetSpec(f"parity{dim}d", dim, n_classes), NETWORK[dim])
    pairs = reference_pairs(method.network)
    model_keys = {k[len("model."):] for k in state if k.startswith("model.")}
    assert {ref for ref, _ in pairs} == model_keys
    ours = {f"network.{our}": state[f"model.{ref}"] for ref, our in pairs}
    ours.update({f"discriminator.{k[2:]}": v for k, v in state.items() if k.startswith("D.")})
    method.load_state_dict(ours, strict=True)
    return method, pairs


def engine_step(method, dim: int, record: dict, arrays: dict, monkeypatch) -> dict:
    """``Trainer.step`` at the recorded iteration with the engine's SGD and the replayed dropout seed."""
    training = {**TRAINING[dim], "momentum": 0.9, "weight_decay": 1e-4}
    optimizer = torch.optim.SGD(method.optimised_parameters(), lr=training["lr"],
                                momentum=training["momentum"], weight_decay=training["weight_decay"])
    stub = SimpleNamespace(seed=0, training=training, optimizer=optimizer, method=method,
                           device=torch.device("cpu"), memory_format=torch.contiguous_format, amp=False,
                           scaler=torch.amp.GradScaler("cuda", enabled=False))
    monkeypatch.setattr(trainer_module, "seed_iteration",
                        lambda seed, t: torch.manual_seed(record["dropout_seed"]))
    image = torch.from_numpy(arrays["image"])
    label = torch.from_numpy(arrays["label"]).long()
    return Trainer.step(stub, record["iteration"], image, label)


# ------------------------------------------------------------------------------- checks
def assert_losses(row: dict, record: dict, names: dict) -> None:
    for ours, ref in names.items():
        assert row[ours] == pytest.approx(record["losses"][ref], rel=LOSS_RTOL, abs=1e-9), ours


def assert_norm_sums(module, pairs, expected: dict, of: str, prefix: str = "") -> None:
    """[L2 norm, sum] of each parameter's grad (``of='grad'``) or value: within GRAD_RTOL of the norm
    plus GRAD_ATOL_OF_TOTAL of the norm over all of ``expected``."""
    named = dict(module.named_parameters())
    atol = GRAD_ATOL_OF_TOTAL * float(np.sqrt(sum(norm ** 2 for norm, _ in expected.values())))
    for ref, ours in pairs:
        got = (named[ours].grad if of == "grad" else named[ours].detach()).double()
        norm, total = expected[ref]
        assert abs(float(got.norm()) - norm) <= GRAD_RTOL * norm + atol, f"{prefix}{ref} norm"
        assert abs(float(got.sum()) - total) <= (GRAD_RTOL * norm + atol) * got.numel() ** 0.5, f"{prefix}{ref} sum"


def parameter_pairs(network, pairs) -> list[tuple[str, str]]:
    names = dict(network.named_parameters())
    return [(ref, ours) for ref, ours in pairs if ours in names]


def assert_sdm_target(method, arrays: dict) -> None:
    label = torch.from_numpy(arrays["label"]).long()
    target = sdm_target(method.network, label, torch.zeros(()))
    expected = torch.from_numpy(arrays["gt_dis"])
    np.testing.assert_array_equal(target.reshape(expected.shape).numpy(), expected.numpy())


def assert_running_stats(network, pairs, after: dict) -> None:
    buffers = dict(network.named_buffers())
    for ref, ours in pairs:
        if ours in buffers and "num_batches" not in ours:
            np.testing.assert_allclose(buffers[ours].numpy(), after[f"model.{ref}"].numpy(),
                                       rtol=1e-5, atol=1e-7, err_msg=ref)


# --------------------------------------------------------------------------------- tests
def test_sassnet_3d_step_matches_train_gan_sdfloss(golden_dir, monkeypatch):
    record, arrays, state = load_case(golden_dir, "sassnet_3d")
    hp = record["hyper_parameters"]
    method, pairs = build("sassnet", 3, record, state, consistency=hp["consistency"],
                          consistency_rampup=hp["consistency_rampup"], sdm_weight=hp["beta"],
                          disc_lr=hp["D_lr"], disc_beta1=hp["D_betas"][0], disc_beta2=hp["D_betas"][1],
                          disc_filters=hp["ndf"])
    assert_sdm_target(method, arrays)
    row = engine_step(method, 3, record, arrays, monkeypatch)
    assert row["lr"] == pytest.approx(record["lr"], rel=1e-12)
    assert_losses(row, record, {"loss": "loss", "loss_dice": "loss_seg_dice", "loss_sdm": "loss_sdf",
                                "loss_ce": "loss_seg_bce", "loss_adv": "loss_adv",
                                "consistency_weight": "consistency_weight", "loss_disc": "D_loss"})
    network_pairs = parameter_pairs(method.network, pairs)
    assert_norm_sums(method.network, network_pairs, record["model_grads"], "grad")
    assert_norm_sums(method.network, network_pairs, record["model_after"], "value")
    disc_pairs = [(name, name) for name, _ in method.discriminator.named_parameters()]
    assert_norm_sums(method.discriminator, disc_pairs, record["D_grads"], "grad", "D.")
    after = torch.load(golden_dir / "sassnet_3d_after.pt", weights_only=True)
    for name, value in method.discriminator.named_parameters():
        np.testing.assert_allclose(value.detach().numpy(), after[f"D.{name}"].numpy(), rtol=0,
                                   atol=ADAM_ATOL_OF_LR * hp["D_lr"], err_msg=name)
    assert_running_stats(method.network, pairs, after)
    with torch.no_grad():  # the discriminator step's input: the updated segmenter in eval mode
        method.network.eval()
        _, sdm, _ = method.network.heads(torch.from_numpy(arrays["image"]))
    np.testing.assert_allclose(sdm.numpy(), arrays["sdm_discriminator_input"], rtol=0, atol=1e-5)


def dtc_step(golden_dir, monkeypatch, case: str, dim: int):
    """(record, our DTC method after the step, reference pairs, the step's row) of ``case``, built with its
    hyper-parameters; the SDM target is checked first."""
    record, arrays, state = load_case(golden_dir, case)
    hp = record["hyper_parameters"]
    method, pairs = build("dtc", dim, record, state, consistency=hp["consistency"],
                          consistency_rampup=hp["consistency_rampup"], sdm_weight=hp["beta"],
                          transform_k=hp["transform_k"])
    assert_sdm_target(method, arrays)
    return record, method, pairs, engine_step(method, dim, record, arrays, monkeypatch)


def test_dtc_3d_step_matches_train_la_dtc(golden_dir, monkeypatch):
    record, method, pairs, row = dtc_step(golden_dir, monkeypatch, "dtc_3d", 3)
    assert row["lr"] == pytest.approx(record["lr"], rel=1e-12)
    assert_losses(row, record, {"loss": "loss", "loss_dice": "loss_seg_dice", "loss_sdm": "loss_sdf",
                                "loss_ce": "loss_seg_bce", "loss_consistency": "consistency_loss",
                                "consistency_weight": "consistency_weight"})
    network_pairs = parameter_pairs(method.network, pairs)
    assert_norm_sums(method.network, network_pairs, record["model_grads"], "grad")
    assert_norm_sums(method.network, network_pairs, record["model_after"], "value")
    assert_running_stats(method.network, pairs, torch.load(golden_dir / "dtc_3d_after.pt", weights_only=True))


def test_dtc_2d_step_matches_ssl4mis_pr37(golden_dir, monkeypatch):
    """2D: the unmerged SSL4MIS PR #37 script. The lr is not compared: SSL4MIS sets the poly lr after each
    step from the old count, so its iteration t >= 1 runs at lr (1 - (t - 1) / T)^0.9, one iteration
    behind the engine's poly schedule (a relative 3e-5 at t = 2999)."""
    record, method, pairs, row = dtc_step(golden_dir, monkeypatch, "dtc_2d", 2)
    assert_losses(row, record, {"loss": "loss", "loss_dice": "loss_dice", "loss_sdm": "loss_sdf",
                                "loss_ce": "loss_ce", "loss_consistency": "consistency_loss",
                                "consistency_weight": "consistency_weight"})
    assert_norm_sums(method.network, parameter_pairs(method.network, pairs), record["model_grads"], "grad")
