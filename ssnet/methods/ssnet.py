"""SS-Net (Wu et al., MICCAI 2022): pixel-level smoothness plus inter-class separation.

L = L_sup + lambda(t) * (L_smooth + separation_weight * (L_sep_labelled + L_sep_unlabelled))

- L_sup: the reference's supervised Dice. 3D (LA): binary Dice of the foreground softmax channel
  against ``label == 1``; 2D (ACDC): mean over all classes of the squared soft Dice. Cross-entropy
  is computed and logged but, as in the reference, not added (``ce_weight`` 0).
- L_smooth: VAT with a Dice distance on the whole batch (:mod:`ssnet.smoothness`).
- L_sep: prototype separation on labelled pixels (ground truth) and unlabelled pixels (argmax
  pseudo-labels), prototypes rebuilt every iteration (:mod:`ssnet.separation`).
- lambda(t) = consistency * sigmoid_rampup((t + rampup_iteration_offset) // 150, consistency_rampup).
  The LA script increments its iteration counter before computing the weight (offset 1), the ACDC
  script after (offset 0).

Defaults are the LA values; ACDC: consistency 0.1, consistency_rampup 200, vat_eps 6,
rampup_iteration_offset 0.

Execution (same maths, dropout masks and BatchNorm updates as one joint backward of L): with
``staged_backward`` the step back-propagates L_sup + lambda * w_sep * L_sep through
:meth:`StepContext.backward` before the VAT passes and returns lambda * L_smooth, so the training
graph and the VAT graph are never held together; ``recompute`` trades one more heads (or heads +
network) forward for not keeping their activations.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssnet.errors import ConfigError
from ssnet.losses import binary_dice_loss, dice_loss
from ssnet.methods.base import (
    Batch,
    DatasetSpec,
    Method,
    StepContext,
    StepOutput,
    register_method,
    resolve_supervised_dice,
)
from ssnet.modes import module_mode
from ssnet.networks import SSNetHeads
from ssnet.ramps import consistency_weight
from ssnet.separation import (
    build_prototype_memory,
    correct_foreground_mask,
    flatten_pixels,
    separation_loss,
)
from ssnet.smoothness import (
    has_active_dropout,
    recompute_in_backward,
    repeated_running_stats_update,
    vat_loss,
)

SMOOTHNESS_DISTANCE = ("auto", "binary_dice", "soft_dice")
VAT_TARGET = ("auto", "separate", "reuse")
RECOMPUTE = ("none", "heads", "all")


@dataclass
class SSNetParams:
    """SS-Net hyper-parameters (defaults: the reference LA script)."""

    consistency: float = 1.0  # w_max of lambda(t); ACDC 0.1
    consistency_rampup: float = 40.0  # ramp-up length L in "epochs" of iters_per_epoch; ACDC 200
    iters_per_epoch: int = 150  # lambda uses (t + offset) // iters_per_epoch
    rampup_iteration_offset: int = 1  # LA script: +1 (counter incremented first); ACDC: 0
    separation_weight: float = 0.1  # weight of L_sep_labelled + L_sep_unlabelled inside lambda(t)
    vat_xi: float = 10.0  # power-iteration step
    vat_eps: float = 10.0  # final perturbation norm per sample; ACDC 6
    power_iterations: int = 1
    elements_per_class: int = 32  # prototypes kept per class
    keep_highest_ranked: bool = False  # False = reference quirk (keeps the lowest-ranked rows)
    weight_prototypes: bool = False  # False = reference quirk (all prototype weights 1)
    smoothness: bool = True  # ablation: include L_smooth
    separation: bool = True  # ablation: include L_sep
    ce_weight: float = 0.0  # reference computes CE but does not add it
    supervised_dice: str = "auto"  # auto (3D: binary_foreground, 2D: multiclass) | binary_foreground | multiclass
    smoothness_distance: str = "auto"  # auto (3D: binary_dice, 2D: soft_dice) | binary_dice | soft_dice
    # VAT target: "separate" = a second clean forward (reference); "reuse" = the training forward's
    # softmax plus the second BatchNorm update, exact only for a deterministic network; "auto" =
    # reuse exactly when no dropout layer is active, otherwise separate.
    vat_target: str = "auto"
    # Activations that backward recomputes instead of keeping (same dropout masks, running statistics
    # updated once: same maths and BatchNorm updates): "none"; "heads" = the per-pixel projection,
    # prediction and selector activations (one more heads forward per iteration); "all" = also the
    # training forward of the network (one more network forward).
    recompute: str = "heads"
    # Back-propagate L_sup + lambda * w_sep * L_sep before the VAT passes, so that the training graph
    # is freed before the smoothness graph is built (peak memory: the larger graph, not their sum).
    # Same gradients (summed in another order), dropout masks and BatchNorm updates; False = one
    # joint backward of the total loss, as the reference.
    staged_backward: bool = True
    feat_dim: int = 32  # projection/prediction width


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"ssnet params: {name} must be one of {list(allowed)}, got {value!r}")
    return value


@register_method("ssnet")
class SSNet(Method):
    """Segmentation network + SS-Net heads (projection, prediction, per-class selectors)."""

    Params = SSNetParams

    def __init__(self, params: SSNetParams, spec: DatasetSpec, network: dict):
        super().__init__(params, spec, network)
        self.heads = SSNetHeads(spec.n_classes, dim_in=self.network.feature_channels, feat_dim=params.feat_dim)
        dim = spec.dim
        self.supervised_dice = resolve_supervised_dice("ssnet", params.supervised_dice, spec)
        self.smoothness_distance = _choice("smoothness_distance", params.smoothness_distance, SMOOTHNESS_DISTANCE)
        if self.smoothness_distance == "auto":
            self.smoothness_distance = "binary_dice" if dim == 3 else "soft_dice"
        _choice("vat_target", params.vat_target, VAT_TARGET)
        self.recompute_heads = _choice("recompute", params.recompute, RECOMPUTE) != "none"
        if params.power_iterations < 1:
            raise ConfigError(f"ssnet params: power_iterations must be >= 1, got {params.power_iterations}")

    # ----------------------------------------------------------------------------------- pieces
    def supervised_loss(self, probs_l: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The reference's Dice on the labelled part's softmax ``probs_l`` (B_l, C, *S)."""
        if self.supervised_dice == "binary_foreground":
            return binary_dice_loss(probs_l[:, 1], label == 1)
        return dice_loss(probs_l, label, self.spec.n_classes)

    def reuse_training_forward(self) -> bool:
        """Whether the training forward doubles as the VAT target (see ``SSNetParams.vat_target``)."""
        if self.params.vat_target != "auto":
            return self.params.vat_target == "reuse"
        return not has_active_dropout(self.network)

    def predicted_features(self, flat: torch.Tensor) -> torch.Tensor:
        """prediction_head(projection_head(flat)) for per-pixel features (N, F) -> (N, feat_dim)."""
        def chain(x: torch.Tensor) -> torch.Tensor:
            return self.heads.predict(self.heads.project(x))

        if self.recompute_heads:
            return recompute_in_backward(chain, flat, stats_module=self.heads)
        return chain(flat)

    def separation_losses(self, features: torch.Tensor, probs: torch.Tensor,
                          label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_sep_labelled, L_sep_unlabelled) from the decoder features (B, F, *S) of the batch."""
        p, heads, n_l = self.params, self.heads, label.shape[0]
        prediction = probs.detach().argmax(dim=1)  # (B, *S)
        flat_l = flatten_pixels(features[:n_l])
        label_flat = label.reshape(-1)
        correct = correct_foreground_mask(prediction[:n_l].reshape(-1), label_flat)
        with torch.no_grad(), module_mode(heads.projection_head, False):
            projected = heads.project(flat_l[correct])
        memory = build_prototype_memory(heads, projected, label_flat[correct], self.spec.n_classes,
                                        p.elements_per_class, p.keep_highest_ranked)
        loss_l = separation_loss(heads, self.predicted_features(flat_l), label_flat, memory,
                                 p.weight_prototypes, self.recompute_heads)
        if features.shape[0] == n_l:
            return loss_l, features.new_zeros(())
        flat_u = flatten_pixels(features[n_l:])
        pseudo = prediction[n_l:].reshape(-1)
        loss_u = separation_loss(heads, self.predicted_features(flat_u), pseudo, memory,
                                 p.weight_prototypes, self.recompute_heads)
        return loss_l, loss_u

    # ------------------------------------------------------------------------------------- step
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        image, label = batch.image, batch.label
        n_l = batch.n_labelled
        reuse = p.smoothness and self.reuse_training_forward()
        bn_twice = repeated_running_stats_update(self.network, 2) if reuse else contextlib.nullcontext()
        with bn_twice:
            if p.recompute == "all":
                logits, features = recompute_in_backward(self.network, image, stats_module=self.network)
            else:
                logits, features = self.network(image)
        probs = torch.softmax(logits, dim=1)

        loss_sup = self.supervised_loss(probs[:n_l], label)
        with torch.set_grad_enabled(p.ce_weight != 0):
            loss_ce = F.cross_entropy(logits[:n_l], label)
        weight = consistency_weight(ctx.iteration + p.rampup_iteration_offset, p.consistency,
                                    p.consistency_rampup, p.iters_per_epoch)
        zero = logits.new_zeros(())
        loss_sep_l, loss_sep_u = self.separation_losses(features, probs, label) if p.separation else (zero, zero)
        loss = loss_sup + p.ce_weight * loss_ce + weight * p.separation_weight * (loss_sep_l + loss_sep_u)
        logs = {"loss_sup": loss_sup, "loss_ce": loss_ce, "loss_sep_l": loss_sep_l, "loss_sep_u": loss_sep_u}
        logs = {k: float(v.detach()) for k, v in logs.items()}
        logs["consistency_weight"] = weight
        loss_smooth = zero
        if p.smoothness:
            target = probs.detach() if reuse else None
            if p.staged_backward:
                ctx.backward(loss)  # frees the training graph; no randomness is drawn in between
                del logits, features, probs
                loss = zero
            loss_smooth = vat_loss(self.network, image, xi=p.vat_xi, eps=p.vat_eps,
                                   power_iterations=p.power_iterations, distance=self.smoothness_distance,
                                   target=target).loss
        logs["loss_smooth"] = float(loss_smooth.detach())
        return StepOutput(loss + weight * loss_smooth, logs)
