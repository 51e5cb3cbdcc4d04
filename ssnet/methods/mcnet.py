"""MC-Net (Wu et al., MICCAI 2021): mutual consistency between two decoders with sharpened targets.

    p_k = softmax(decoder_k(encoder(x))),  k = 1, 2   (whole batch)
    sharpen(p) = p^(1/T) / (p^(1/T) + (1 - p)^(1/T)),  T = temperature
    L_mc = sum_{i != j} mean((p_i - sharpen(p_j))^2)
    L = dice_weight * sum_k Dice_k + ce_weight * sum_k CE_k + lambda(t) * L_mc

- 3D (LA, ``train_mcnet_3d.py`` with ``MCNet3d_v1``): Dice = binary Dice of the foreground softmax
  channel vs ``label == 1`` (:func:`ssnet.losses.binary_dice_loss`, reference ``Binary_dice_loss``),
  dice_weight 0.5, w_max 1.0, ramp-up 40. 2D (ACDC, ``train_mcnet_2d.py`` with ``MCNet2d_v1``): MC-Net's
  own ``DiceLoss``, the mean over classes of 1 - sum(p t) / (sum p^2 + sum t^2 + 1e-10), without the
  factor 2 (:func:`ssnet.losses.halved_dice_loss`; ``supervised_dice: multiclass`` gives the standard
  squared soft Dice with the factor 2, :func:`ssnet.losses.dice_loss`), dice_weight 1.0, w_max 0.1,
  ramp-up 200.
- CE is computed and logged, not added (``ce_weight`` 0). The sharpened targets are not detached:
  the reference copies them into a buffer with in-place assignment, which keeps the graph
  (``detach_targets`` offers the stop-gradient variant).
- Both scripts increment their counter before lambda (``rampup_iteration_offset`` 1).
- Test time: decoder 1 only (``MCNet.forward``).
Parameters: ``mcnet.yaml`` (defaults: the LA values).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssnet.losses import binary_dice_loss, dice_loss, halved_dice_loss
from ssnet.methods.base import (
    Batch,
    Method,
    StepContext,
    StepOutput,
    register_method,
    resolve_supervised_dice,
)
from ssnet.methods.shared import ramp_weight
from ssnet.networks import MCNet as MCNetNetwork


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) / (p^(1/T) + (1 - p)^(1/T)), elementwise (identity at T = 1)."""
    a = p ** (1.0 / temperature)
    return a / (a + (1.0 - p) ** (1.0 / temperature))


def mutual_consistency(probs: list[torch.Tensor], temperature: float, detach_targets: bool = False) -> torch.Tensor:
    """sum over ordered pairs i != j of mean((p_i - sharpen(p_j))^2)."""
    targets = [sharpen(q.detach() if detach_targets else q, temperature) for q in probs]
    loss = probs[0].new_zeros(())
    for i, p_i in enumerate(probs):
        for j, t_j in enumerate(targets):
            if i != j:
                loss = loss + torch.mean((p_i - t_j) ** 2)  # reference losses.mse_loss
    return loss


@register_method("mcnet")
class MCNet(Method):
    """Shared encoder + two decoders (:class:`ssnet.networks.MCNet`)."""

    def __init__(self, params: Any, spec, network: dict):
        super().__init__(params, spec, network)
        value = params.supervised_dice
        if value == "auto" and spec.dim == 2:
            value = "multiclass_halved"
        self.supervised_dice = resolve_supervised_dice("mcnet", value, spec)

    def build_segmenter(self, network: dict) -> nn.Module:
        kwargs = {k: v for k, v in network.items() if k != "arch"}
        return MCNetNetwork(network["arch"], in_channels=self.spec.in_channels, n_classes=self.spec.n_classes,
                            **kwargs)

    def dice(self, probs_l: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Dice of the labelled part: probs_l (B_l, C, *S), label (B_l, *S)."""
        if self.supervised_dice == "binary_foreground":
            return binary_dice_loss(probs_l[:, 1], label == 1)
        if self.supervised_dice == "multiclass_halved":
            return halved_dice_loss(probs_l, label, self.spec.n_classes)
        return dice_loss(probs_l, label, self.spec.n_classes)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        n_l, label = batch.n_labelled, batch.label
        outputs = self.network.forward_all(batch.image)
        probs = [torch.softmax(o, dim=1) for o in outputs]
        loss_dice = sum(self.dice(q[:n_l], label) for q in probs)
        loss_ce = sum(F.cross_entropy(o[:n_l], label) for o in outputs)
        loss_mc = mutual_consistency(probs, p.temperature, p.detach_targets)
        weight = ramp_weight(ctx, p)
        loss = p.dice_weight * loss_dice + p.ce_weight * loss_ce + weight * loss_mc
        logs = {"loss_dice": loss_dice, "loss_ce": loss_ce, "loss_consistency": loss_mc}
        logs = {k: float(v.detach()) for k, v in logs.items()}
        logs["consistency_weight"] = weight
        return StepOutput(loss, logs)
