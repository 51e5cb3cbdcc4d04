"""UA-MT (Yu et al., MICCAI 2019): uncertainty-aware mean teacher.

L = ce_weight * CE_l + dice_weight * Dice_l + lambda(t) * L_con, with on the unlabelled part
    L_con = sum(mask * (softmax(student) - softmax(teacher(x_u + noise)))^2) / (mask_normaliser * sum(mask) + 1e-16)
    mask  = u < (threshold_base + threshold_ramp * sigmoid_rampup(t, max_iterations)) * ln 2
where u is the entropy of the mean softmax of ``uncertainty_passes`` noisy teacher passes (dropout on;
run as T/2 passes of the unlabelled batch repeated twice, as the reference). Noise:
clamp(N(0, noise_std^2), -noise_clip, noise_clip). The consistency target is a separate noisy teacher
pass (reference ``ema_output``), not the mean of the T passes. The mask (B_u, 1, *S) broadcasts over
the classes while sum(mask) counts pixels, hence the reference's factor 2 (``mask_normaliser``, 2 in
both references whatever the number of classes). lambda(t) = consistency * sigmoid_rampup((t + offset)
// iters_per_epoch, consistency_rampup) with t the 0-based iteration (offset 0, as both references).

Teacher: a second network of the same architecture (a submodule, excluded from SGD), updated after
each SGD step of iteration t (0-based) with alpha = min(1 - 1/(t + 1), ema_decay) on parameters only;
like the reference it runs in train mode (dropout on in every teacher pass), so its BatchNorm uses batch
statistics and its running statistics follow its own forwards. ``teacher_init``: ``separate`` (default,
as the references' ``create_model(ema=True)``) builds it with its own random initialisation, drawn from
the run's seeded generator after the student's; ``copy`` starts it as a copy of the student. Test time
uses the student (the reference saves and tests ``model``, not ``ema_model``).

Dice (``supervised_dice: auto``): 3D (LA, reference ``train_LA_meanteacher_certainty_unlabel.py``)
squared soft Dice of the foreground softmax channel vs ``label == 1`` (smooth 1e-5); 2D (ACDC, SSL4MIS
``train_uncertainty_aware_mean_teacher_2D.py``) mean over classes. Parameters: ``uamt.yaml`` (defaults:
the LA values; ACDC: consistency_rampup 200). One training step matches both references number for
number (``tests/test_parity_uamt.py``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from ssnet.methods.base import (
    Batch,
    Method,
    StepContext,
    StepOutput,
    register_method,
    resolve_supervised_dice,
)
from ssnet.methods.shared import multiclass_squared_dice, ramp_weight, squared_dice
from ssnet.ramps import sigmoid_rampup


def ema_alpha(iteration: int, decay: float) -> float:
    """min(1 - 1/(t + 1), decay): the true average early on, then the exponential one."""
    return min(1.0 - 1.0 / (iteration + 1), decay)


def uncertainty_mask(uncertainty: torch.Tensor, iteration: int, max_iterations: int, base: float,
                     ramp: float) -> torch.Tensor:
    """Float mask of pixels whose entropy is below (base + ramp * sigmoid_rampup(t, max)) * ln 2."""
    threshold = (base + ramp * sigmoid_rampup(iteration, max_iterations)) * math.log(2)
    return (uncertainty < threshold).to(uncertainty.dtype)


@register_method("uamt")
class UAMT(Method):
    """Student (``network``) + EMA teacher (``teacher``)."""

    def __init__(self, params: Any, spec, network: dict):
        super().__init__(params, spec, network)
        self.supervised_dice = resolve_supervised_dice("uamt", params.supervised_dice, spec)
        if params.teacher_init == "separate":
            self.teacher = self.build_segmenter(network)
        else:
            self.teacher = copy.deepcopy(self.network)
        self.teacher.requires_grad_(False)

    def supervised_losses(self, logits_l: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(logits_l, dim=1)
        if self.supervised_dice == "binary_foreground":
            dice = squared_dice(probs[:, 1], label == 1, self.params.dice_smooth)
        else:
            dice = multiclass_squared_dice(probs, label, self.spec.n_classes, self.params.dice_smooth)
        return F.cross_entropy(logits_l, label), dice

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        return torch.clamp(torch.randn_like(x) * p.noise_std, -p.noise_clip, p.noise_clip)

    @torch.no_grad()
    def teacher_uncertainty(self, x_u: torch.Tensor) -> torch.Tensor:
        """Per-pixel entropy (B_u, 1, *S) of the mean softmax of T noisy teacher passes."""
        p = self.params
        repeated = x_u.repeat(2, *([1] * (x_u.dim() - 1)))
        passes = [self.teacher(repeated + self._noise(repeated))[0] for _ in range(p.uncertainty_passes // 2)]
        probs = torch.softmax(torch.cat(passes), dim=1)
        mean = probs.reshape(p.uncertainty_passes, x_u.shape[0], *probs.shape[1:]).mean(dim=0)
        return -torch.sum(mean * torch.log(mean + p.entropy_eps), dim=1, keepdim=True)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        n_l = batch.n_labelled
        x_u = batch.image[n_l:]
        noise = self._noise(x_u)  # drawn first, as the reference
        logits, _ = self.network(batch.image)
        loss_ce, loss_dice = self.supervised_losses(logits[:n_l], batch.label)
        loss_con, mask_share = logits.new_zeros(()), 0.0
        if x_u.shape[0]:
            with torch.no_grad():
                target = torch.softmax(self.teacher(x_u + noise)[0], dim=1)
                uncertainty = self.teacher_uncertainty(x_u)
            mask = uncertainty_mask(uncertainty, ctx.iteration, ctx.max_iterations, p.threshold_base,
                                    p.threshold_ramp)
            dist = (torch.softmax(logits[n_l:], dim=1) - target) ** 2
            loss_con = torch.sum(mask * dist) / (p.mask_normaliser * torch.sum(mask) + 1e-16)
            mask_share = float(mask.mean())
        weight = ramp_weight(ctx, p)
        loss = p.ce_weight * loss_ce + p.dice_weight * loss_dice + weight * loss_con
        logs = {"loss_ce": float(loss_ce.detach()), "loss_dice": float(loss_dice.detach()),
                "loss_consistency": float(loss_con.detach()), "mask_share": mask_share,
                "consistency_weight": weight}
        return StepOutput(loss, logs)

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> None:
        alpha = ema_alpha(ctx.iteration, self.params.ema_decay)
        for teacher, student in zip(self.teacher.parameters(), self.network.parameters()):
            teacher.mul_(alpha).add_(student, alpha=1.0 - alpha)
