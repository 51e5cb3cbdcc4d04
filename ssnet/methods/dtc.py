"""DTC (Luo et al., AAAI 2021): dual-task consistency between segmentation and a signed-distance map.

L = dice_weight * Dice_l + sdm_weight * MSE(SDM_l, SDM target) + ce_weight * CE_l
    + lambda(t) * mean((T(SDM) - p)^2)  over the whole batch, with T(z) = sigmoid(-transform_k * z)

- 3D (LA, reference HiLab-git/DTC ``code/train_la_dtc.py``): one-channel sigmoid segmentation head and
  one-channel SDM of the foreground; Dice = squared soft Dice (smooth 1e-5) of sigmoid(z) vs
  ``label == 1``; CE is BCE-with-logits, computed and logged but not added (``ce_weight`` 0).
- 2D (ACDC): follows ``code/train_dtc_sdf_soft_sig_2D.py`` of the UNMERGED SSL4MIS pull request #37
  (HiLab-git/SSL4MIS ``refs/pull/37/head``, commit 68832ad; not in SSL4MIS master, so no official 2D
  DTC exists): ``UNet_DTC`` (the SSL4MIS UNet with a second 3x3 output conv + tanh), softmax head with one
  channel per class and one SDM per class, background included (``compute_sdf_multi``); Dice = mean
  over classes of the squared soft Dice (``DiceLoss``); CE computed, not added; the consistency covers
  every class channel of the whole batch.
- lambda(t) = consistency * sigmoid_rampup((t + offset) // iters_per_epoch, consistency_rampup).
- SDM targets of the labelled samples come from :func:`ssnet.networks.signed_distance_map`, computed
  once per batch on the CPU.

Parity: ``tests/test_parity_sassnet_dtc.py`` (one step against both references). Heads, Dice, SDM target
and CE: :mod:`ssnet.methods.shared` (also used by SASSNet). Parameters: ``dtc.yaml`` (defaults: the LA
values; ACDC: consistency 0.1, consistency_rampup 200).
"""

from __future__ import annotations

import torch
from torch import nn

from ssnet.methods.base import Batch, Method, StepContext, StepOutput, register_method
from ssnet.methods.shared import build_dual_head, dual_head_supervised, ramp_weight


def dtc_transform(sdm: torch.Tensor, k: float) -> torch.Tensor:
    """T(z) = sigmoid(-k z): the SDM -> soft mask transform (0.5 on the boundary)."""
    return torch.sigmoid(-k * sdm)


@register_method("dtc")
class DTC(Method):
    """Segmentation + tanh SDM heads on the dataset's VNet/UNet."""

    def build_segmenter(self, network: dict) -> nn.Module:
        return build_dual_head(self, network, self.params.seg_output)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        seg, sdm, _ = self.network.heads(batch.image)
        probs, dice, ce, loss_sdm = dual_head_supervised(self.network, seg, sdm, batch.label, p.dice_smooth)
        loss_cons = torch.mean((dtc_transform(sdm, p.transform_k) - probs) ** 2)
        weight = ramp_weight(ctx, p)
        loss = p.dice_weight * dice + p.ce_weight * ce + p.sdm_weight * loss_sdm + weight * loss_cons
        logs = {"loss_dice": dice, "loss_ce": ce, "loss_sdm": loss_sdm, "loss_consistency": loss_cons}
        logs = {k: float(v.detach()) for k, v in logs.items()}
        logs["consistency_weight"] = weight
        return StepOutput(loss, logs)
