"""Helpers of tests/test_parity_urpc.py and tests/test_parity_mcnet.py: read the committed vectors, map the
reference state-dict names onto ours, and run one training step the way the engine does.

Reference names: MC-Net ``MCNet3d_v1`` (``encoder.*``, ``decoder1.*``, ``decoder2.*``), ``MCNet2d_v1``
(the same three parts, 2D) and SSL4MIS ``UNet_URPC`` (``encoder.*``, ``decoder.*`` with the side heads
``decoder.out_conv_dp{1,2,3}``; ``out_conv_dp4`` is never used by the reference forward).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssnet.config import load_config, run_config
from ssnet.engine.checkpoint import build_method
from ssnet.methods.base import Batch, Method, StepContext, StepOutput
from ssnet.networks.reference_names import (BN_TENSORS, CONV_TENSORS, UNET_DOUBLE_CONV_LAYERS, unet_key_pairs,
                                            vnet_key_pairs)

ROOT = Path(__file__).resolve().parents[1]
VNET_UPS = ("block_five_up", "block_six_up", "block_seven_up", "block_eight_up")
VNET_STAGES = ("block_six", "block_seven", "block_eight", "block_nine")


def load_case(golden_dir: Path, name: str) -> tuple[dict, dict]:
    """(``<name>.json`` record, ``<name>_state.pt`` tensors)."""
    record = json.loads((golden_dir / f"{name}.json").read_text())
    tensors = torch.load(golden_dir / f"{name}_state.pt", map_location="cpu", weights_only=True)
    return record, tensors


def prefixed(tensors: dict, prefix: str) -> dict:
    """{key without ``prefix``: float32 (if floating) tensor} of the entries starting with ``prefix``."""
    return {k[len(prefix):]: (v.float() if v.is_floating_point() else v)
            for k, v in tensors.items() if k.startswith(prefix)}


def _layer(ref: str, ours: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f"{ref}.{n}", f"{ours}.{n}") for n in names]


def _rename(pairs: list[tuple[str, str]], ref_from: str, ref_to: str, our_prefix: str) -> list[tuple[str, str]]:
    return [((ref_to + r[len(ref_from):]) if r.startswith(ref_from) else r, our_prefix + o) for r, o in pairs]


def mcnet3d_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """MCNet3d_v1 names -> our MCNet (VNet backbone = encoder + decoder 1; trilinear decoder 2)."""
    pairs = _rename(vnet_key_pairs(net.backbone), "decoder.", "decoder1.", "backbone.")
    for k, (up, stage) in enumerate(zip(VNET_UPS, VNET_STAGES)):
        pairs += _layer(f"decoder2.{up}.conv.1", f"decoder2.up_convs.{k}.conv", CONV_TENSORS)
        pairs += _layer(f"decoder2.{up}.conv.2", f"decoder2.up_convs.{k}.norm", BN_TENSORS)
        for i in range(len(net.decoder2.decoder_stages[k].units)):
            ours = f"decoder2.decoder_stages.{k}.units.{i}"
            pairs += _layer(f"decoder2.{stage}.conv.{3 * i}", f"{ours}.conv", CONV_TENSORS)
            pairs += _layer(f"decoder2.{stage}.conv.{3 * i + 1}", f"{ours}.norm", BN_TENSORS)
    return pairs + _layer("decoder2.out_conv", "decoder2.out_conv", CONV_TENSORS)


def mcnet2d_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """MCNet2d_v1 names -> our MCNet (UNet backbone = encoder + decoder 1; transposed-conv decoder 2)."""
    pairs = _rename(unet_key_pairs(net.backbone), "decoder.", "decoder1.", "backbone.")
    for k in range(1, len(net.backbone.channels)):
        ours = f"decoder2.up_blocks.{k - 1}"
        pairs += _layer(f"decoder2.up{k}.up", f"{ours}.up", CONV_TENSORS)
        for index, layer, names in UNET_DOUBLE_CONV_LAYERS:
            pairs += _layer(f"decoder2.up{k}.conv.conv_conv.{index}", f"{ours}.fuse.{layer}", names)
    return pairs + _layer("decoder2.out_conv", "decoder2.out_conv", CONV_TENSORS)


def urpc2d_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """UNet_URPC names -> our URPCNet (UNet backbone; side heads 1/8, 1/4, 1/2 = out_conv_dp3, dp2, dp1)."""
    pairs = _rename(unet_key_pairs(net.backbone), "decoder.", "decoder.", "backbone.")
    for k, ref in enumerate(("out_conv_dp3", "out_conv_dp2", "out_conv_dp1")):
        pairs += _layer(f"decoder.{ref}", f"aux_heads.{k}", CONV_TENSORS)
    return pairs


def load_reference_weights(net: nn.Module, pairs: list[tuple[str, str]], weights: dict) -> None:
    """Load reference-keyed ``weights`` into ``net`` through ``pairs`` (every one of our tensors named once)."""
    ours = net.state_dict()
    assert sorted(o for _, o in pairs) == sorted(ours), set(ours) ^ {o for _, o in pairs}
    net.load_state_dict({o: weights[r].to(ours[o].dtype) for r, o in pairs}, strict=True)


def method_for(dataset: str, method: str, network: dict, params: dict | None = None) -> tuple[Method, dict]:
    """(our method built from config.yaml's resolved run config with ``network`` overrides, run config)."""
    cfg = run_config(load_config([ROOT / "config.yaml"]), dataset, method, "8" if dataset == "LA" else "7")
    cfg["network"].update(network)
    cfg["params"].update(params or {})
    return build_method(cfg), cfg


def engine_step(method: Method, image: torch.Tensor, label: torch.Tensor, iteration: int, seed: int,
                training: dict) -> tuple[StepOutput, float, dict]:
    """One step as ``Trainer.step`` does it (train mode, SGD with the run's lr / momentum / weight decay,
    ``zero_grad(set_to_none)``, ``training_step``, ``ctx.backward``, ``optimizer.step``), the global torch
    and numpy generators seeded with ``seed`` right before ``training_step``.

    Returns (step output, total loss back-propagated, {parameter name: gradient}).
    """
    method.train()
    optimizer = torch.optim.SGD(method.optimised_parameters(), lr=training["lr"], momentum=training["momentum"],
                                weight_decay=training["weight_decay"])
    optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    ctx = StepContext(iteration, training["iterations"])
    output = method.training_step(Batch(image, label.long()), ctx)
    ctx.backward(output.loss)
    grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    optimizer.step()
    return output, ctx.backpropagated, grads


def norms_by_reference(values: dict, pairs: list[tuple[str, str]], prefix: str) -> dict:
    """{reference key: float64 L2 norm} of our per-parameter tensors ``values`` (keys ``prefix`` + our key)."""
    out = {}
    for ref, ours in pairs:
        if prefix + ours in values:
            out[ref] = float(values[prefix + ours].double().norm())
    return out


def reference_step(golden_dir: Path, name: str, dataset: str, method_name: str, network: dict, pairs_of,
                   iter_key: str) -> dict:
    """Case ``name`` stepped by our ``method_name`` (``network`` overrides) from the reference weights:
    {record, tensors, method, pairs, output, total, grads, updates, training}."""
    record, tensors = load_case(golden_dir, name)
    method, cfg = method_for(dataset, method_name, network(record))
    pairs = pairs_of(method.network)
    load_reference_weights(method.network, pairs, prefixed(tensors, "weights."))
    before = {k: p.detach().clone() for k, p in method.named_parameters()}
    inputs = prefixed(tensors, "input.")
    output, total, grads = engine_step(method, inputs["image"], inputs["label"][:record["n_labelled"]],
                                       record[iter_key], record["step_seed"], cfg["training"])
    updates = {k: p.detach() - before[k] for k, p in method.named_parameters()}
    return {"record": record, "tensors": tensors, "method": method, "pairs": pairs, "output": output, "total": total,
            "grads": grads, "updates": updates, "training": cfg["training"]}


def assert_buffers_after(step: dict) -> None:
    """Our BatchNorm statistics after the step (by reference key) against ``buffers_after.*``: running
    statistics rtol 1e-5, atol 1e-6; counters exactly."""
    ours = {r: step["method"].network.state_dict()[o] for r, o in step["pairs"]}
    expected = prefixed(step["tensors"], "buffers_after.")
    assert expected
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert int(ours[key]) == int(value), key
