"""Supervised training on labelled data only: the labelled-only lower bound and full supervision.

L = ce_weight * CE(logits, y) + dice_weight * Dice(softmax(logits), y) over the (B, C, *S) logits and
(B, *S) labels of a labelled-only batch, with the squared soft Dice
1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s) (s = ``dice_smooth``):
- ``binary_foreground`` (3D default, UA-MT ``code/train_LA.py``): p = softmax channel 1, t = (y == 1);
- ``multiclass`` (2D default, SSL4MIS ``code/train_fully_supervised_2D.py``): mean over classes c of
  the Dice of channel c vs (y == c), background included.
Parameters: ``supervised.yaml``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssnet.methods.base import Batch, Method, StepContext, StepOutput, register_method, resolve_supervised_dice
from ssnet.methods.shared import multiclass_squared_dice, squared_dice


@register_method("supervised")
class Supervised(Method):
    """The segmentation network alone, trained on the labelled subset (batches hold no unlabelled part)."""

    uses_unlabelled = False

    def __init__(self, params, spec, network: dict):
        super().__init__(params, spec, network)
        self.supervised_dice = resolve_supervised_dice("supervised", params.supervised_dice, spec)

    def dice(self, probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Squared soft Dice loss of (B, C, *S) probabilities vs (B, *S) labels in the configured form."""
        if self.supervised_dice == "binary_foreground":
            return squared_dice(probs[:, 1], label == 1, self.params.dice_smooth)
        return multiclass_squared_dice(probs, label, self.spec.n_classes, self.params.dice_smooth)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        logits, _ = self.network(batch.image)
        ce = F.cross_entropy(logits, batch.label)
        dice = self.dice(torch.softmax(logits, dim=1), batch.label)
        loss = self.params.ce_weight * ce + self.params.dice_weight * dice
        return StepOutput(loss, {"loss_ce": ce.item(), "loss_dice": dice.item()})
