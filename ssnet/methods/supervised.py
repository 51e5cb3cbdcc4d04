"""Supervised training on labelled data only: the labelled-only lower bound and full supervision.

L = ce_weight * CE + dice_weight * Dice (softmax, mean over classes); parameters: ``supervised.yaml``.
"""

from __future__ import annotations

import torch.nn.functional as F

from ssnet.losses import dice_loss
from ssnet.methods.base import Batch, Method, StepContext, StepOutput, register_method


@register_method("supervised")
class Supervised(Method):
    """The segmentation network alone, trained on the labelled subset (batches hold no unlabelled part)."""

    uses_unlabelled = False

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        logits, _ = self.network(batch.image)
        ce = F.cross_entropy(logits, batch.label)
        dice = dice_loss(logits, batch.label, self.spec.n_classes, softmax=True)
        loss = self.params.ce_weight * ce + self.params.dice_weight * dice
        return StepOutput(loss, {"loss_ce": ce.item(), "loss_dice": dice.item()})
