"""DTC (Luo et al., AAAI 2021): dual-task consistency between segmentation and a signed-distance map.

L = dice_weight * Dice_l + sdm_weight * MSE(SDM_l, SDM target) + ce_weight * CE_l
    + lambda(t) * mean((T(SDM) - p)^2)  over the whole batch, with T(z) = sigmoid(-transform_k * z)

- 3D (LA, reference ``train_la_dtc.py``): one-channel sigmoid segmentation head and one-channel SDM
  of the foreground; Dice = squared soft Dice (smooth 1e-5) of sigmoid(z) vs ``label == 1``; CE is
  BCE-with-logits, computed and logged but not added (``ce_weight`` 0).
- 2D (ACDC, SSL4MIS ``train_dtc_sdf_soft_sig_2D.py``): softmax head with one channel per class and
  one SDM per class (background included); Dice = mean over classes of the squared soft Dice.
- lambda(t) = consistency * sigmoid_rampup((t + offset) // iters_per_epoch, consistency_rampup).
- SDM targets of the labelled samples come from :func:`ssnet.networks.signed_distance_map`, computed
  once per batch on the CPU.

Also home of the helpers SASSNet, UA-MT and URPC share (reference Dice forms, SDM target tensor).
Defaults are the LA values; ACDC: consistency 0.1, consistency_rampup 200.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssnet.errors import ConfigError
from ssnet.losses import _squared_dice_loss
from ssnet.methods.base import Batch, Method, StepContext, StepOutput, register_method
from ssnet.networks import DualHeadNet, signed_distance_map
from ssnet.ramps import consistency_weight

SEG_OUTPUTS = ("auto", "sigmoid", "softmax")


# ------------------------------------------------------------------------------- shared helpers
def squared_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s) over the whole tensor (reference ``dice_loss``)."""
    return _squared_dice_loss(probs, target, smooth)


def multiclass_squared_dice(probs: torch.Tensor, label: torch.Tensor, n_classes: int, smooth: float) -> torch.Tensor:
    """Mean over classes of :func:`squared_dice` of ``probs[:, c]`` vs ``label == c`` (SSL4MIS ``DiceLoss``)."""
    return sum(squared_dice(probs[:, c], label == c, smooth) for c in range(n_classes)) / n_classes


def ramp_weight(ctx: StepContext, params) -> float:
    """lambda(t) with the method's w_max, ramp length, epoch length and iteration offset."""
    return consistency_weight(ctx.iteration + params.rampup_iteration_offset, params.consistency,
                              params.consistency_rampup, params.iters_per_epoch)


def resolve_seg_output(value: str, spec, method: str) -> bool:
    """True for the one-channel sigmoid head (3D binary reference), False for softmax."""
    if value not in SEG_OUTPUTS:
        raise ConfigError(f"{method} params: seg_output must be one of {list(SEG_OUTPUTS)}, got {value!r}")
    if value == "auto":
        return spec.dim == 3 and spec.n_classes == 2
    if value == "sigmoid" and spec.n_classes != 2:
        raise ConfigError(f"{method} params: seg_output sigmoid needs 2 classes, dataset {spec.name} has {spec.n_classes}")
    return value == "sigmoid"


def build_dual_head(method: Method, network: dict, seg_output: str) -> DualHeadNet:
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


# ------------------------------------------------------------------------------------- method
@dataclass
class DTCParams:
    """DTC hyper-parameters (defaults: the reference LA script)."""

    consistency: float = 1.0  # w_max of lambda(t); ACDC 0.1
    consistency_rampup: float = 40.0  # ramp length in "epochs" of iters_per_epoch; ACDC 200
    iters_per_epoch: int = 150
    rampup_iteration_offset: int = 0  # the reference computes lambda before incrementing its counter
    transform_k: float = 1500.0  # T(z) = sigmoid(-k z)
    sdm_weight: float = 0.3  # beta: weight of the SDM regression
    dice_weight: float = 1.0
    ce_weight: float = 0.0  # reference computes (B)CE but does not add it
    dice_smooth: float = 1e-5
    seg_output: str = "auto"  # auto (3D binary: sigmoid, else softmax) | sigmoid | softmax


def dtc_transform(sdm: torch.Tensor, k: float) -> torch.Tensor:
    """T(z) = sigmoid(-k z): the SDM -> soft mask transform (0.5 on the boundary)."""
    return torch.sigmoid(-k * sdm)


@register_method("dtc")
class DTC(Method):
    """Segmentation + tanh SDM heads on the dataset's VNet/UNet."""

    Params = DTCParams

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
