"""SS-Net (Wu et al., MICCAI 2022): pixel-level smoothness plus inter-class separation.

L = L_sup + lambda(t) * (L_smooth + separation_weight * (L_sep_labelled + L_sep_unlabelled))

- L_sup: the reference's supervised Dice. 3D (LA): binary Dice of the foreground softmax channel
  against ``label == 1``; 2D (ACDC): mean over all classes of the squared soft Dice. Cross-entropy
  is computed and logged but, as in the reference, not added (``ce_weight`` 0).
- L_smooth: VAT with a Dice distance on the whole batch (:mod:`ssnet.smoothness`).
- L_sep: prototype separation on labelled pixels (ground truth) and unlabelled pixels (argmax
  pseudo-labels) (:mod:`ssnet.separation`). The prototype memory lives across iterations, as the
  reference ``FeatureMemory`` (created once in train_ss_3d.py / train_ss_2d.py): a class with no
  correctly predicted labelled pixel in the batch keeps its previous prototypes. It is part of the
  resume state (:meth:`SSNet.extra_state_dict`). ``persistent_memory: false`` rebuilds it every
  iteration (such a class then has no prototypes and adds no term).
- lambda(t) = consistency * sigmoid_rampup((t + rampup_iteration_offset) // 150, consistency_rampup).
  The LA script increments its iteration counter before computing the weight (offset 1), the ACDC
  script after (offset 0).

Parameters: ``ssnet.yaml`` (defaults: the LA values; ACDC: consistency 0.1, consistency_rampup 200,
vat_eps 6, rampup_iteration_offset 0).

Execution (same maths, dropout masks and BatchNorm updates as one joint backward of L): with
``staged_backward`` the step back-propagates L_sup + lambda * w_sep * L_sep through
:meth:`StepContext.backward` before the VAT passes and returns lambda * L_smooth, so the training
graph and the VAT graph are never held together; ``recompute`` trades one more heads (or heads +
network) forward for not keeping their activations. The VAT target's clean pass reuses what of the
training forward is deterministic (``vat_target: auto``): all of it without dropout, the VNet's encoder
with it (the clean pass then runs the bottleneck dropout and decoder only), with the BatchNorm layers
of the reused part updated twice.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from ssnet.errors import ConfigError
from ssnet.losses import binary_dice_loss, class_argmax, dice_loss
from ssnet.methods.base import (
    Batch,
    DatasetSpec,
    Method,
    StepContext,
    StepOutput,
    register_method,
    resolve_supervised_dice,
)
from ssnet.methods.shared import ramp_weight
from ssnet.modes import module_mode
from ssnet.networks import SSNetHeads
from ssnet.separation import (
    PrototypeMemory,
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

@register_method("ssnet")
class SSNet(Method):
    """Segmentation network + SS-Net heads (projection, prediction, per-class selectors)."""

    def __init__(self, params: Any, spec: DatasetSpec, network: dict):
        super().__init__(params, spec, network)
        self.heads = SSNetHeads(spec.n_classes, dim_in=self.network.feature_channels, feat_dim=params.feat_dim)
        dim = spec.dim
        self.supervised_dice = resolve_supervised_dice("ssnet", params.supervised_dice, spec)
        self.smoothness_distance = params.smoothness_distance
        if self.smoothness_distance == "auto":
            self.smoothness_distance = "binary_dice" if dim == 3 else "soft_dice"
        self.recompute_heads = params.recompute != "none"
        if params.vat_target == "prefix" and not hasattr(self.network, "deterministic_prefix"):
            raise ConfigError(f"ssnet params: vat_target prefix needs a network with a deterministic prefix "
                              f"(vnet); {type(self.network).__name__} has none on {spec.name}: use auto or separate")
        self.memory: PrototypeMemory | None = None  # kept across iterations iff params.persistent_memory

    # ----------------------------------------------------------------------------------- pieces
    def supervised_loss(self, probs_l: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The reference's Dice on the labelled part's softmax ``probs_l`` (B_l, C, *S)."""
        if self.supervised_dice == "binary_foreground":
            return binary_dice_loss(probs_l[:, 1], label == 1)
        return dice_loss(probs_l, label, self.spec.n_classes)

    def vat_target_mode(self) -> str:
        """How the VAT target is computed (``vat_target`` in ``ssnet.yaml``): ``reuse`` (the training
        forward's softmax), ``prefix`` (a clean pass from the training forward's deterministic prefix)
        or ``separate`` (a second clean forward). ``auto``: reuse without active dropout, else prefix
        where the network has a deterministic prefix (VNet), else separate."""
        if self.params.vat_target != "auto":
            return self.params.vat_target
        if not has_active_dropout(self.network):
            return "reuse"
        return "prefix" if hasattr(self.network, "deterministic_prefix") else "separate"

    def training_forward(self, image: torch.Tensor, target_mode: str):
        """(logits, features, prefix) of the train-mode network on ``image``; ``prefix`` (the network's
        :meth:`deterministic_prefix` output, for :meth:`clean_target`) in ``prefix`` mode, else None.

        Where the VAT target reuses the forward (all of it, or its deterministic prefix), those
        BatchNorm layers also get the clean pass's running-statistics update. ``recompute: all`` runs
        the forward again in backward instead of keeping its activations.
        """
        network = self.network

        def forward(x: torch.Tensor):
            if target_mode == "prefix":
                with repeated_running_stats_update(network.prefix_modules(), 2):
                    prefix = network.deterministic_prefix(x)
                return (*network.forward_from_prefix(prefix), prefix)
            with repeated_running_stats_update(network, 2) if target_mode == "reuse" else contextlib.nullcontext():
                return (*network(x), None)

        if self.params.recompute == "all":
            return recompute_in_backward(forward, image, stats_module=network)
        return forward(image)

    def clean_target(self, target_mode: str, probs: torch.Tensor, prefix: list[torch.Tensor] | None):
        """The VAT target softmax(f(x)), no gradient, from the training forward's ``probs`` (``reuse``) or
        its deterministic ``prefix`` (a pass through the rest of the network: its own dropout masks and
        BatchNorm updates); None for ``separate`` (:func:`vat_loss` runs the clean pass)."""
        if target_mode == "reuse":
            return probs.detach()
        if target_mode != "prefix":
            return None
        with torch.no_grad():
            return torch.softmax(self.network.forward_from_prefix(prefix)[0], dim=1)

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
        prediction = class_argmax(probs.detach())  # (B, *S)
        # split, not two slices: its backward writes one gradient instead of zero-filling and summing two
        labelled, unlabelled = features.split([n_l, features.shape[0] - n_l])
        flat_l = flatten_pixels(labelled)
        label_flat = label.reshape(-1)
        correct = correct_foreground_mask(prediction[:n_l].reshape(-1), label_flat)
        with torch.no_grad(), module_mode(heads.projection_head, False):
            projected = heads.project(flat_l[correct])
        memory = build_prototype_memory(heads, projected, label_flat[correct], self.spec.n_classes,
                                        p.elements_per_class, p.keep_highest_ranked, previous=self.memory)
        if p.persistent_memory:
            self.memory = memory
        loss_l = separation_loss(heads, self.predicted_features(flat_l), label_flat, memory,
                                 p.weight_prototypes, self.recompute_heads)
        if unlabelled.shape[0] == 0:
            return loss_l, features.new_zeros(())
        flat_u = flatten_pixels(unlabelled)
        pseudo = prediction[n_l:].reshape(-1)
        loss_u = separation_loss(heads, self.predicted_features(flat_u), pseudo, memory,
                                 p.weight_prototypes, self.recompute_heads)
        return loss_l, loss_u

    # ------------------------------------------------------------------------------ resume state
    def extra_state_dict(self) -> dict:
        """The prototype memory (per class: (K_c, D) rows and their source indices, or None)."""
        if self.memory is None:
            return {}
        return {"prototype_memory": {"prototypes": self.memory.prototypes,
                                     "source_rows": self.memory.source_rows}}

    def load_extra_state_dict(self, state: dict) -> None:
        saved = state.get("prototype_memory")
        if saved is None:
            self.memory = None
            return
        device = next(self.heads.parameters()).device
        moved = {k: [None if t is None else t.to(device) for t in v] for k, v in saved.items()}
        self.memory = PrototypeMemory(moved["prototypes"], moved["source_rows"])

    # ------------------------------------------------------------------------------------- step
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        image, label = batch.image, batch.label
        n_l = batch.n_labelled
        target_mode = self.vat_target_mode() if p.smoothness else "separate"
        logits, features, prefix = self.training_forward(image, target_mode)
        probs = torch.softmax(logits, dim=1)
        # the reference's clean pass follows the separation losses, which draw no randomness: take it now
        target = self.clean_target(target_mode, probs, prefix)
        del prefix

        loss_sup = self.supervised_loss(probs[:n_l], label)
        with torch.set_grad_enabled(p.ce_weight != 0):
            loss_ce = F.cross_entropy(logits[:n_l], label)
        weight = ramp_weight(ctx, p)
        zero = logits.new_zeros(())
        loss_sep_l, loss_sep_u = self.separation_losses(features, probs, label) if p.separation else (zero, zero)
        loss = loss_sup + p.ce_weight * loss_ce + weight * p.separation_weight * (loss_sep_l + loss_sep_u)
        logs = {"loss_sup": loss_sup, "loss_ce": loss_ce, "loss_sep_l": loss_sep_l, "loss_sep_u": loss_sep_u}
        logs = {k: float(v.detach()) for k, v in logs.items()}
        logs["consistency_weight"] = weight
        loss_smooth = zero
        if p.smoothness:
            if p.staged_backward:
                del logits, features, probs  # the graph keeps what backward needs; the rest is freed in it
                ctx.backward(loss)  # frees the training graph; no randomness is drawn in between
                loss = zero
            loss_smooth = vat_loss(self.network, image, xi=p.vat_xi, eps=p.vat_eps,
                                   power_iterations=p.power_iterations, distance=self.smoothness_distance,
                                   target=target).loss
        logs["loss_smooth"] = float(loss_smooth.detach())
        return StepOutput(loss + weight * loss_smooth, logs)
