"""Helpers every method may import: the reference Dice forms, the consistency ramp, dual-head networks.

- :func:`squared_dice` / :func:`multiclass_squared_dice`: the squared soft Dice of the reference
  ``dice_loss`` (one channel) and its mean over classes (SSL4MIS ``DiceLoss``), with the method's smooth.
- :func:`ramp_weight`: lambda(t) = consistency * sigmoid_rampup((t + offset) // iters_per_epoch,
  consistency_rampup) from a method's ``params``.
- Dual-head (segmentation + signed-distance map) networks of DTC and SASSNet: :func:`build_dual_head`
  (3D two-class: one-channel sigmoid head as the references; otherwise softmax with one SDM per class),
  :func:`sdm_target` and :func:`dual_head_supervised` (Dice_l, CE_l and the SDM regression).

This module registers no method.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ssnet.datasets import DatasetSpec
from ssnet.errors import ConfigError
from ssnet.methods.base import Method, StepContext
from ssnet.networks import DualHeadNet, signed_distance_map
from ssnet.ramps import consistency_weight


# ------------------------------------------------------------------------------------- Dice
def squared_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s) over the whole tensor (reference ``dice_loss``)."""
    target = target.to(probs.dtype)
    intersect = torch.sum(probs * target)
    return 1.0 - (2.0 * intersect + smooth) / (torch.sum(probs * probs) + torch.sum(target * target) + smooth)


def multiclass_squared_dice(probs: torch.Tensor, label: torch.Tensor, n_classes: int, smooth: float) -> torch.Tensor:
    """Mean over classes of :func:`squared_dice` of ``probs[:, c]`` vs ``label == c`` (SSL4MIS ``DiceLoss``)."""
    return sum(squared_dice(probs[:, c], label == c, smooth) for c in range(n_classes)) / n_classes


# ------------------------------------------------------------------------------------- ramp
def ramp_weight(ctx: StepContext, params: Any) -> float:
    """lambda(t) with the method's w_max, ramp length, epoch length and iteration offset."""
    return consistency_weight(ctx.iteration + params.rampup_iteration_offset, params.consistency,
                              params.consistency_rampup, params.iters_per_epoch)


# -------------------------------------------------------------------------- dual-head networks
def resolve_seg_output(value: str, spec: DatasetSpec, method: str) -> bool:
    """True for the one-channel sigmoid head, False for softmax; ``auto`` = sigmoid for 3D two-class data.

    ``value`` is one of auto | sigmoid | softmax (the method's parameter fragment declares the choices).
    """
    if value == "auto":
        return spec.dim == 3 and spec.n_classes == 2
    if value == "sigmoid" and spec.n_classes != 2:
        raise ConfigError(f"{method} params: seg_output sigmoid needs 2 classes, "
                          f"dataset {spec.name} has {spec.n_classes}")
    return value == "sigmoid"


def build_dual_head(method: Method, network: dict, seg_output: str) -> DualHeadNet:
    """The segmentation + SDM network of ``method`` from the dataset's ``network`` config block."""
    kwargs = {k: v for k, v in network.items() if k != "arch"}
    binary = resolve_seg_output(seg_output, method.spec, method.type_name)
    return DualHeadNet(network["arch"], in_channels=method.spec.in_channels, n_classes=method.spec.n_classes,
                       binary_sigmoid=binary, **kwargs)


def sdm_target(network: DualHeadNet, label: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """SDM target (B_l, K, *S) of the labelled samples: class 1 for the sigmoid head, every class otherwise."""
    classes = [1] if network.binary_sigmoid else list(range(network.n_classes))
    target = signed_distance_map(label.detach().cpu().numpy(), classes)
    return torch.from_numpy(target).to(device=like.device, dtype=like.dtype)


def dual_head_supervised(network: DualHeadNet, seg: torch.Tensor, sdm: torch.Tensor, label: torch.Tensor,
                         smooth: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities of the whole batch, Dice_l, CE_l, MSE(SDM_l, target)) shared by DTC and SASSNet."""
    n_l = label.shape[0]
    if network.binary_sigmoid:
        probs = torch.sigmoid(seg)
        dice = squared_dice(probs[:n_l, 0], label == 1, smooth)
        ce = F.binary_cross_entropy_with_logits(seg[:n_l, 0], (label == 1).to(seg.dtype))
    else:
        probs = torch.softmax(seg, dim=1)
        dice = multiclass_squared_dice(probs[:n_l], label, network.n_classes, smooth)
        ce = F.cross_entropy(seg[:n_l], label)
    loss_sdm = F.mse_loss(sdm[:n_l], sdm_target(network, label, sdm))
    return probs, dice, ce, loss_sdm
