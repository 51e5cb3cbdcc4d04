"""Segmentation networks (3D VNet, 2D UNet), the SS-Net heads, the comparison methods' networks
(SDM dual head, MC-Net, URPC, SASSNet discriminator; built on a VNet/UNet backbone) and
reference-name mapping."""

from __future__ import annotations

from torch import nn

from .discriminator import Discriminator
from .heads import MLPHead, SSNetHeads
from .mcnet import MCNet
from .multihead import DualHeadNet, signed_distance_map
from .reference_names import (config_from_reference_state, load_reference_state,
                              split_reference_state, to_reference_state)
from .unet import UNet
from .urpc import URPCNet
from .vnet import VNet

ARCHITECTURES = {"vnet": VNet, "unet": UNet}

__all__ = ["ARCHITECTURES", "Discriminator", "DualHeadNet", "MCNet", "MLPHead", "SSNetHeads", "UNet", "URPCNet",
           "VNet", "build_network", "signed_distance_map",
           "build_from_reference_state", "config_from_reference_state", "count_parameters",
           "load_reference_state", "split_reference_state", "to_reference_state"]


def build_network(arch: str, **kwargs) -> nn.Module:
    """Build ``"vnet"`` or ``"unet"`` (case-insensitive) with the given constructor kwargs."""
    key = arch.lower() if isinstance(arch, str) else arch
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown network {arch!r}; valid choices: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key](**kwargs)


def build_from_reference_state(arch: str, state: dict, **network_kwargs):
    """(network, heads or None) shaped after and loaded from a reference-keyed state dict.

    ``network_kwargs`` override inferred kwargs (e.g. ``dropout=False``).
    """
    net_cfg, heads_cfg = config_from_reference_state(arch.lower(), state)
    network = build_network(arch, **{**net_cfg, **network_kwargs})
    heads = SSNetHeads(**heads_cfg) if heads_cfg is not None else None
    load_reference_state(network, state, heads)
    return network, heads


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
