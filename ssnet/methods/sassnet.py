"""SASSNet (Li et al., MICCAI 2020): shape-aware adversarial learning with a signed-distance map.

Segmenter (the engine's SGD step):
    L = dice_weight * Dice_l + sdm_weight * MSE(SDM_l, SDM target) + ce_weight * CE_l
        + lambda(t) * CE(D(SDM_u, x_u), "labelled")
with the discriminator D in eval mode (no dropout) and its parameters frozen for that step.
Discriminator (``after_optimizer_step``, reference order): the segmenter, now updated, in eval mode
and without gradient maps the whole batch to SDMs; D (train mode) learns labelled = 1 / unlabelled = 0
with CE; one Adam step (lr 1e-4, betas 0.9/0.99). The Adam state is resume state
(``extra_state_dict``); D's weights are part of the method's ``state_dict``.

- 3D (LA): kleinzcy/SASSnet ``code/train_gan_sdfloss.py`` (``networks/vnet_sdf.py``,
  ``networks/discriminator.py`` FC3DDiscriminator); one-channel sigmoid head, Dice and SDM target as
  DTC's 3D; the BCE is computed, not added (``ce_weight`` 0).
- 2D (ACDC): SASSNet has no 2D training script (an assumption of this pipeline): the 3D loss on DTC's
  2D dual-head UNet (unmerged SSL4MIS PR #37 ``UNet_DTC``: softmax, one SDM per class, mean-class Dice)
  with SASSnet's 2D ``FCDiscriminator`` (no activation after the fused map + image convs) pooled
  globally (its fixed ``AvgPool2d(7)`` does not fit a 256x256 patch).

Heads, Dice, SDM target and CE: :mod:`ssnet.methods.shared`. Parity: ``tests/test_parity_sassnet_dtc.py``.
Parameters: ``sassnet.yaml`` (defaults: the LA values, w_max 0.015 for 8 labelled scans as the SASSnet
README; its script default 0.01 goes with 16).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ssnet.methods.base import Batch, Method, StepContext, StepOutput, register_method
from ssnet.methods.shared import build_dual_head, dual_head_supervised, ramp_weight
from ssnet.modes import module_mode
from ssnet.networks import Discriminator


@register_method("sassnet")
class SASSNet(Method):
    """Dual-head segmenter + discriminator with its own Adam optimiser."""

    def __init__(self, params: Any, spec, network: dict):
        super().__init__(params, spec, network)
        self.discriminator = Discriminator(spec.dim, self.network.head_channels, spec.in_channels,
                                           ndf=params.disc_filters, dropout=params.disc_dropout,
                                           negative_slope=params.disc_negative_slope)
        self.discriminator.requires_grad_(False)  # trained only by its own optimiser, in after_optimizer_step
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=params.disc_lr,
                                               betas=(params.disc_beta1, params.disc_beta2))
        self._pending: tuple[torch.Tensor, int, dict] | None = None

    def build_segmenter(self, network: dict) -> nn.Module:
        return build_dual_head(self, network, self.params.seg_output)

    def optimised_parameters(self) -> Iterable[nn.Parameter]:
        return [q for q in self.network.parameters() if q.requires_grad]

    def discriminator_targets(self, n_labelled: int, n_total: int, device) -> torch.Tensor:
        lab = self.params.labelled_target
        target = torch.full((n_total,), 1 - lab, dtype=torch.long, device=device)
        target[:n_labelled] = lab
        return target

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        image, n_l = batch.image, batch.n_labelled
        seg, sdm, _ = self.network.heads(image)
        _, dice, ce, loss_sdm = dual_head_supervised(self.network, seg, sdm, batch.label, p.dice_smooth)
        loss_adv = seg.new_zeros(())
        if image.shape[0] > n_l:
            with module_mode(self.discriminator, False):
                d_out = self.discriminator(sdm[n_l:], image[n_l:])
            fool = torch.full((d_out.shape[0],), p.labelled_target, dtype=torch.long, device=d_out.device)
            loss_adv = F.cross_entropy(d_out, fool)
        weight = ramp_weight(ctx, p)
        loss = p.dice_weight * dice + p.ce_weight * ce + p.sdm_weight * loss_sdm + weight * loss_adv
        logs = {"loss_dice": dice, "loss_ce": ce, "loss_sdm": loss_sdm, "loss_adv": loss_adv}
        logs = {k: float(v.detach()) for k, v in logs.items()}
        logs["consistency_weight"] = weight
        self._pending = (image.detach(), n_l, logs)
        return StepOutput(loss, logs)

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self._pending is None:
            return
        image, n_l, logs = self._pending
        self._pending = None
        with torch.no_grad(), module_mode(self.network, False):
            _, sdm, _ = self.network.heads(image)
        target = self.discriminator_targets(n_l, image.shape[0], image.device)
        self.discriminator.requires_grad_(True)
        try:
            with module_mode(self.discriminator, True):
                d_loss = F.cross_entropy(self.discriminator(sdm, image), target)
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_optimizer.step()
        finally:
            self.discriminator.requires_grad_(False)
        logs["loss_disc"] = float(d_loss.detach())  # lands in this iteration's log row

    def extra_state_dict(self) -> dict:
        return {"disc_optimizer": self.disc_optimizer.state_dict()}

    def load_extra_state_dict(self, state: dict) -> None:
        if "disc_optimizer" in state:
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
