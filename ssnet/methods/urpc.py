"""URPC (Luo et al., MICCAI 2021): uncertainty-rectified pyramid consistency.

The network (:class:`ssnet.networks.URPCNet`) gives four logits at input size: full resolution and
the perturbed 1/2, 1/4, 1/8 side outputs (S = 4 scales).

    L_sup = mean_s (ce_weight * CE_s + dice_weight * Dice_s)          (reference: (sum CE + sum Dice) / 8)
    P     = (p_full + p_1/2 + p_1/4 + p_1/8) / 4  (not detached, as the reference)
    D_s   = KL(P || p_s) per pixel = sum_c P (log P - log p_s),  w_s = exp(-D_s)
    L_s   = mean(w_s (P - p_s)^2) / (mean(w_s) + rectify_eps) + mean(D_s)      on the unlabelled part
    L     = L_sup + lambda(t) * mean_s L_s

Dice is the mean over classes of the squared soft Dice (SSL4MIS ``DiceLoss``) in 2D and 3D; log p_s is
computed as log_softmax (the reference takes log of the softmax: the same up to rounding, without
-inf for saturated pixels). The SSL4MIS 2D and 3D scripts (``train_uncertainty_rectified_pyramid_
consistency_2D.py`` / ``_3D.py``) compute the same loss; they differ in the network's perturbations
(``perturbation``: ``pyramid`` for ``UNet_URPC``, ``decoder_dropout`` for ``unet_3D_dv_semi``) and in
their schedules (2D: w_max 0.1, ramp-up 200; 3D: w_max 0.1, ramp-up 400 over 60k iterations on BraTS;
LA uses the LA ramp-up 40, protocol section 6). Test time uses the full-resolution output.
Parameters: ``urpc.yaml``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssnet.errors import ConfigError
from ssnet.methods.base import Batch, Method, StepContext, StepOutput, register_method
from ssnet.methods.shared import multiclass_squared_dice, ramp_weight
from ssnet.networks import URPCNet


def rectified_consistency(probs_u: list[torch.Tensor], eps: float = 1e-8,
                          log_probs_u: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean_s L_s, mean_s mean(D_s)) for per-scale softmax maps of the unlabelled part (B_u, C, *S)."""
    mean = sum(probs_u) / len(probs_u)
    log_probs_u = log_probs_u or [torch.log(p) for p in probs_u]
    losses, kls = [], []
    for p_s, log_p_s in zip(probs_u, log_probs_u):
        kl = torch.sum(F.kl_div(log_p_s, mean, reduction="none"), dim=1, keepdim=True)
        w = torch.exp(-kl)
        losses.append(torch.mean(w * (mean - p_s) ** 2) / (torch.mean(w) + eps) + torch.mean(kl))
        kls.append(torch.mean(kl))
    return sum(losses) / len(losses), sum(kls) / len(kls)


@register_method("urpc")
class URPC(Method):
    """URPC network (backbone + three perturbed auxiliary heads)."""

    def build_segmenter(self, network: dict) -> nn.Module:
        p = self.params
        needs = {"bilinear": 2, "trilinear": 3}.get(p.aux_upsample)
        if needs is not None and needs != self.spec.dim:
            raise ConfigError(f"urpc params: aux_upsample {p.aux_upsample} needs a {needs}D dataset, "
                              f"dataset {self.spec.name} is {self.spec.dim}D")
        kwargs = {k: v for k, v in network.items() if k != "arch"}
        return URPCNet(network["arch"], in_channels=self.spec.in_channels, n_classes=self.spec.n_classes,
                       dropout_p=p.aux_dropout, feature_drop_low=p.feature_drop_low,
                       feature_drop_high=p.feature_drop_high, noise=p.feature_noise,
                       upsample_mode=None if p.aux_upsample == "auto" else p.aux_upsample,
                       perturbation=None if p.perturbation == "auto" else p.perturbation,
                       aux_dropout_mode=p.aux_dropout_mode,
                       stage_dropout=(p.stage_dropout_1_8, p.stage_dropout_1_4, p.stage_dropout_1_2,
                                      p.stage_dropout_full), **kwargs)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        n_l, label = batch.n_labelled, batch.label
        outputs = self.network.forward_pyramid(batch.image)
        probs = [torch.softmax(o, dim=1) for o in outputs]
        ce = [F.cross_entropy(o[:n_l], label) for o in outputs]
        dice = [multiclass_squared_dice(q[:n_l], label, self.spec.n_classes, p.dice_smooth) for q in probs]
        loss_sup = sum(p.ce_weight * c + p.dice_weight * d for c, d in zip(ce, dice)) / len(outputs)
        loss_con, mean_kl = outputs[0].new_zeros(()), outputs[0].new_zeros(())
        if batch.image.shape[0] > n_l:
            log_probs = [torch.log_softmax(o[n_l:], dim=1) for o in outputs]
            loss_con, mean_kl = rectified_consistency([q[n_l:] for q in probs], p.rectify_eps, log_probs)
        weight = ramp_weight(ctx, p)
        loss = loss_sup + weight * loss_con
        logs = {"loss_sup": loss_sup, "loss_ce": ce[0], "loss_dice": dice[0], "loss_consistency": loss_con,
                "mean_kl": mean_kl}
        logs = {k: float(v.detach()) for k, v in logs.items()}
        logs["consistency_weight"] = weight
        return StepOutput(loss, logs)
