"""Explicit name mapping between the official SS-Net state-dict keys and this package's modules.

Reference keys look like ``encoder.block_one.conv.0.weight`` (VNet), ``decoder.up1.conv1x1.bias``
(UNet) or ``contrastive_class_selector_memory1.3.weight`` (heads; same naming for VNet and UNet).
Every mapping below is spelled out as (reference module, our module) pairs; only the tensor suffix
(``weight``, ``running_mean``, ...) is appended programmatically.
"""

from __future__ import annotations

from torch import nn

from .heads import SSNetHeads
from .unet import UNet
from .vnet import VNet

CONV_TENSORS = ("weight", "bias")
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# VNet blocks in reference order: (reference block, our block, kind).
# "stack": reference Sequential of [Conv, BN, ReLU] * k  ->  our ConvStack.units[i].{conv,norm}
# "unit":  reference Sequential [Conv, BN, ReLU]          ->  our ConvNormReLU.{conv,norm}
VNET_BLOCKS = (
    ("encoder.block_one", "encoder_stages.0", "stack"),
    ("encoder.block_one_dw", "down_convs.0", "unit"),
    ("encoder.block_two", "encoder_stages.1", "stack"),
    ("encoder.block_two_dw", "down_convs.1", "unit"),
    ("encoder.block_three", "encoder_stages.2", "stack"),
    ("encoder.block_three_dw", "down_convs.2", "unit"),
    ("encoder.block_four", "encoder_stages.3", "stack"),
    ("encoder.block_four_dw", "down_convs.3", "unit"),
    ("encoder.block_five", "encoder_stages.4", "stack"),
    ("decoder.block_five_up", "up_convs.0", "unit"),
    ("decoder.block_six", "decoder_stages.0", "stack"),
    ("decoder.block_six_up", "up_convs.1", "unit"),
    ("decoder.block_seven", "decoder_stages.1", "stack"),
    ("decoder.block_seven_up", "up_convs.2", "unit"),
    ("decoder.block_eight", "decoder_stages.2", "stack"),
    ("decoder.block_eight_up", "up_convs.3", "unit"),
    ("decoder.block_nine", "decoder_stages.3", "stack"),
)
VNET_OUT_CONV = ("decoder.out_conv", "out_conv")

# UNet double conv: reference Sequential index -> our DoubleConv layer (2, 3, 6 hold no tensors).
UNET_DOUBLE_CONV_LAYERS = ((0, "conv1", CONV_TENSORS), (1, "norm1", BN_TENSORS),
                           (4, "conv2", CONV_TENSORS), (5, "norm2", BN_TENSORS))
UNET_OUT_CONV = ("decoder.out_conv", "out_conv")

# Heads: reference Sequential index -> our MLPHead layer (2 is the activation).
HEAD_LAYERS = ((0, "fc_in", CONV_TENSORS), (1, "norm", BN_TENSORS), (3, "fc_out", CONV_TENSORS))


def _layer_pairs(ref: str, ours: str, tensors: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f"{ref}.{t}", f"{ours}.{t}") for t in tensors]


def _vnet_block_pairs(network: VNet, ref: str, ours: str, kind: str) -> list[tuple[str, str]]:
    if kind == "unit":
        return (_layer_pairs(f"{ref}.conv.0", f"{ours}.conv", CONV_TENSORS)
                + _layer_pairs(f"{ref}.conv.1", f"{ours}.norm", BN_TENSORS))
    pairs = []
    for i in range(len(network.get_submodule(ours).units)):  # each unit = Conv, BN, ReLU
        pairs += _layer_pairs(f"{ref}.conv.{3 * i}", f"{ours}.units.{i}.conv", CONV_TENSORS)
        pairs += _layer_pairs(f"{ref}.conv.{3 * i + 1}", f"{ours}.units.{i}.norm", BN_TENSORS)
    return pairs


def vnet_key_pairs(network: VNet) -> list[tuple[str, str]]:
    """(reference key, our key) for every VNet tensor, in the reference state-dict order."""
    pairs = []
    for ref, ours, kind in VNET_BLOCKS:
        pairs += _vnet_block_pairs(network, ref, ours, kind)
    return pairs + _layer_pairs(*VNET_OUT_CONV, CONV_TENSORS)


def _double_conv_pairs(ref: str, ours: str) -> list[tuple[str, str]]:
    pairs = []
    for index, layer, tensors in UNET_DOUBLE_CONV_LAYERS:
        pairs += _layer_pairs(f"{ref}.{index}", f"{ours}.{layer}", tensors)
    return pairs


def unet_key_pairs(network: UNet) -> list[tuple[str, str]]:
    """(reference key, our key) for every UNet tensor, in the reference state-dict order.

    Reference: encoder.in_conv, encoder.down{k} (k = 1..L-1), decoder.up{k} (k = 1..L-1, deepest
    first), decoder.out_conv; ours: encoder_blocks[0..L-1], up_blocks[0..L-2], out_conv.
    """
    levels = len(network.channels)
    pairs = _double_conv_pairs("encoder.in_conv.conv_conv", "encoder_blocks.0")
    for k in range(1, levels):
        pairs += _double_conv_pairs(f"encoder.down{k}.maxpool_conv.1.conv_conv",
                                    f"encoder_blocks.{k}")
    for k in range(1, levels):
        pairs += _layer_pairs(f"decoder.up{k}.conv1x1", f"up_blocks.{k - 1}.reduce", CONV_TENSORS)
        pairs += _double_conv_pairs(f"decoder.up{k}.conv.conv_conv", f"up_blocks.{k - 1}.fuse")
    return pairs + _layer_pairs(*UNET_OUT_CONV, CONV_TENSORS)


def heads_key_pairs(heads: SSNetHeads) -> list[tuple[str, str]]:
    """(reference key, our key) for every head tensor, in the reference state-dict order."""
    modules = [("projection_head", "projection_head"), ("prediction_head", "prediction_head")]
    modules += [(f"contrastive_class_selector_{c}", f"selectors.{c}")
                for c in range(heads.n_classes)]
    modules += [(f"contrastive_class_selector_memory{c}", f"memory_selectors.{c}")
                for c in range(heads.n_classes)]
    pairs = []
    for ref, ours in modules:
        for index, layer, tensors in HEAD_LAYERS:
            pairs += _layer_pairs(f"{ref}.{index}", f"{ours}.{layer}", tensors)
    return pairs


def network_key_pairs(network: nn.Module) -> list[tuple[str, str]]:
    """(reference key, our key) pairs for a VNet or UNet."""
    if isinstance(network, VNet):
        return vnet_key_pairs(network)
    if isinstance(network, UNet):
        return unet_key_pairs(network)
    raise TypeError(f"no reference names for {type(network).__name__} (expected VNet or UNet)")


def is_network_key(reference_key: str) -> bool:
    """True for the segmentation part's keys (``encoder.*``, ``decoder.*``), False for heads."""
    return reference_key.startswith(("encoder.", "decoder."))


def split_reference_state(state: dict) -> tuple[dict, dict]:
    """Split a reference state dict into (segmentation network part, heads part)."""
    network_part = {k: v for k, v in state.items() if is_network_key(k)}
    heads_part = {k: v for k, v in state.items() if not is_network_key(k)}
    return network_part, heads_part


def _convert(module: nn.Module, pairs: list[tuple[str, str]], state: dict,
             problems: dict[str, list[str]]) -> dict:
    """Our-keyed state for ``module`` from reference-keyed ``state``; records problems."""
    ours = module.state_dict()
    mapped_ours = {our for _, our in pairs}
    problems["our tensors without a reference name"] += sorted(set(ours) - mapped_ours)
    converted = {}
    for ref, our in pairs:
        if ref not in state:
            problems["missing reference keys"].append(ref)
        elif tuple(state[ref].shape) != tuple(ours[our].shape):
            problems["shape mismatches"].append(
                f"{ref} {tuple(state[ref].shape)} -> {our} {tuple(ours[our].shape)}")
        else:
            converted[our] = state[ref]
    return converted


def load_reference_state(network: nn.Module, state: dict, heads: SSNetHeads | None = None) -> None:
    """Load a reference-keyed state dict (network keys, plus head keys iff ``heads`` is given).

    Strict: every reference key must be mapped, every one of our tensors filled, shapes equal;
    otherwise ValueError listing unmapped / missing keys and shape mismatches. Loads nothing on error.
    """
    problems = {"unmapped reference keys": [], "missing reference keys": [],
                "shape mismatches": [], "our tensors without a reference name": []}
    parts = [(network, network_key_pairs(network))]
    if heads is not None:
        parts.append((heads, heads_key_pairs(heads)))
    known = {ref for _, pairs in parts for ref, _ in pairs}
    problems["unmapped reference keys"] = sorted(set(state) - known)
    converted = [_convert(module, pairs, state, problems) for module, pairs in parts]
    _raise_if_problems(problems, type(network).__name__)
    for (module, _), module_state in zip(parts, converted):
        module.load_state_dict(module_state, strict=True)


def _raise_if_problems(problems: dict[str, list[str]], name: str) -> None:
    lines = [f"  {kind} ({len(keys)}): {', '.join(keys)}" for kind, keys in problems.items() if keys]
    if lines:
        raise ValueError(f"reference state does not match this {name}:\n" + "\n".join(lines))


def to_reference_state(network: nn.Module, heads: SSNetHeads | None = None) -> dict:
    """Reference-keyed state dict (cloned tensors) of ``network`` (+ ``heads``), in reference order."""
    parts = [(network, network_key_pairs(network))]
    if heads is not None:
        parts.append((heads, heads_key_pairs(heads)))
    out = {}
    for module, pairs in parts:
        ours = module.state_dict()
        out.update({ref: ours[our].detach().clone() for ref, our in pairs})
    return out


def config_from_reference_state(arch: str, state: dict) -> tuple[dict, dict | None]:
    """Constructor kwargs (network, heads or None) inferred from a reference state's tensor shapes."""
    if arch == "vnet":
        first = state["encoder.block_one.conv.0.weight"]
        net = {"in_channels": first.shape[1], "n_filters": first.shape[0]}
    elif arch == "unet":
        first = state["encoder.in_conv.conv_conv.0.weight"]
        widths = [first.shape[0]]
        while f"encoder.down{len(widths)}.maxpool_conv.1.conv_conv.0.weight" in state:
            widths.append(state[f"encoder.down{len(widths)}.maxpool_conv.1.conv_conv.0.weight"]
                          .shape[0])
        net = {"in_channels": first.shape[1], "channels": tuple(widths)}
    else:
        raise ValueError(f"unknown arch {arch!r}; valid choices: 'vnet', 'unet'")
    net["n_classes"] = state["decoder.out_conv.weight"].shape[0]
    return net, _heads_config(state)


def _heads_config(state: dict) -> dict | None:
    if "projection_head.0.weight" not in state:
        return None
    feat_dim, dim_in = state["projection_head.0.weight"].shape
    n_classes = sum(1 for k in state
                    if k.startswith("contrastive_class_selector_") and k.endswith(".0.weight")
                    and "memory" not in k)
    return {"n_classes": n_classes, "dim_in": dim_in, "feat_dim": feat_dim}
