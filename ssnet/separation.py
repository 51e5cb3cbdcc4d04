"""Inter-class separation: per-class prototype memory and the weighted cosine separation loss.

Each iteration:

1. Labelled pixels that the network predicts correctly and that are not background
   (:func:`correct_foreground_mask`) are projected by the projection head in eval mode without
   gradient; :func:`build_prototype_memory` keeps up to ``elements_per_class`` of them per class,
   ranked by ``sigmoid(selector_c)``. A class with no such pixel keeps the prototypes of the
   ``previous`` memory (the reference ``FeatureMemory`` of ``utils/feature_memory.py`` is created
   once per run), or has none when no previous memory is given (memory rebuilt every iteration).
2. :func:`separation_loss` pulls predicted features (prediction(projection(f))) towards their class's
   prototypes: per class ``mean_ij(w_i v_j (1 - cos(f_i, m_j)))`` with ``w = sigmoid(selector_c(f.detach()))``
   and ``v = sigmoid(memory_selector_c(normalise(m)))``, each rescaled to mean 1; summed over classes
   and divided by the number of classes (background included in the count).

Reference quirk kept by default: the prototype weights are rescaled after a transpose, which makes
each of them exactly 1 (``weight_prototypes=True`` gives the intended mean-1 weights).

Reference quirk kept by default: its ranking sorts the scores in ascending order, so a class with
more rows than the memory holds keeps its LOWEST-ranked rows, in ascending score order
(``keep_highest_ranked=True`` keeps the highest-ranked ones, in descending order, as intended).
A class with at most ``elements_per_class`` rows keeps them all, in input order.

All functions take flattened per-pixel features ``(N, C)``; :func:`flatten_pixels` makes them
from ``(B, C, *S)`` maps in the reference's (batch, spatial...) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ssnet.networks import SSNetHeads
from ssnet.smoothness import recompute_in_backward


def flatten_pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B * prod(S), C), pixels in (batch, spatial...) order."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def correct_foreground_mask(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Pixels predicted correctly and not background: ``(prediction == label) & (prediction > 0)``."""
    return (prediction == label) & (prediction > 0)


@dataclass
class PrototypeMemory:
    """Per class c: ``prototypes[c]`` (K_c, D) rows without gradient, or None (no rows);
    ``source_rows[c]`` the index of each row in the input of the update that stored them (which may
    be an earlier iteration's, for a class kept from a previous memory)."""

    prototypes: list[torch.Tensor | None]
    source_rows: list[torch.Tensor | None]

    @property
    def n_classes(self) -> int:
        return len(self.prototypes)


def build_prototype_memory(heads: SSNetHeads, projected: torch.Tensor, labels: torch.Tensor,
                           n_classes: int, elements_per_class: int = 32,
                           keep_highest_ranked: bool = False,
                           previous: PrototypeMemory | None = None) -> PrototypeMemory:
    """The memory after an update with projected features (N, D) and their class labels (N,).

    A class with more than ``elements_per_class`` rows is ranked by ``sigmoid(selector_c)``, run
    without gradient in the heads' current mode (train mode: batch statistics, running-stat update);
    see the module docstring for which rows are kept. A class with no rows keeps ``previous``'s
    entry (reference ``FeatureMemory.add_features_from_sample_learned``), or gets None without one.
    """
    projected = projected.detach()
    labels = labels.reshape(-1)
    if previous is not None and previous.n_classes != n_classes:
        raise ValueError(f"previous memory has {previous.n_classes} classes, expected {n_classes}")
    prototypes = list(previous.prototypes) if previous is not None else [None] * n_classes
    source_rows = list(previous.source_rows) if previous is not None else [None] * n_classes
    for c in range(n_classes):
        rows = torch.nonzero(labels == c).reshape(-1)
        if rows.numel() == 0:
            continue
        if rows.numel() > elements_per_class:
            with torch.no_grad():
                score = torch.sigmoid(heads.selector(c)(projected[rows]))[:, 0]
            order = torch.argsort(score, descending=keep_highest_ranked, stable=True)
            rows = rows[order[:elements_per_class]]
        prototypes[c] = projected[rows]
        source_rows[c] = rows
    return PrototypeMemory(prototypes, source_rows)


def mean_one_weights(selector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sigmoid(selector(x)) rescaled to mean 1: (n, D) -> (n,)."""
    w = torch.sigmoid(selector(x))[:, 0]
    return (w.shape[0] / w.sum()) * w


def reference_prototype_weights(selector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference's prototype weights: every sigmoid score divided by itself, i.e. all 1.

    The reference transposes the (n, 1) scores to (1, n) before its mean-1 rescaling, so the
    "sum over rows" is each score alone. The selector still runs (its BatchNorm statistics update in
    train mode) but its gradient is zero up to rounding.
    """
    w = torch.sigmoid(selector(x))[:, 0]
    return w / w


def class_separation_term(features: torch.Tensor, prototypes: torch.Tensor,
                          feature_weights: torch.Tensor, prototype_weights: torch.Tensor) -> torch.Tensor:
    """mean_ij(w_i v_j (1 - cos(f_i, m_j))) without forming the (n_f, n_m) matrix.

    The double sum factorises: sum_ij w_i v_j (1 - f_i.m_j) = (sum w)(sum v) - (sum_i w_i f_i).(sum_j v_j m_j)
    for unit rows f_i, m_j, which keeps memory and time linear in the number of pixels.
    """
    f = F.normalize(features, dim=1)
    m = F.normalize(prototypes, dim=1)
    pulled = feature_weights @ f  # (D,)
    anchor = prototype_weights @ m  # (D,)
    total = feature_weights.sum() * prototype_weights.sum() - torch.dot(pulled, anchor)
    return total / (features.shape[0] * prototypes.shape[0])


def _class_term(heads: SSNetHeads, c: int, features: torch.Tensor, mask: torch.Tensor,
                prototypes: torch.Tensor, weight_prototypes: bool) -> torch.Tensor:
    """Class c's weighted mean cosine distance between ``features[mask]`` and its prototypes."""
    features_c = features[mask]
    w = mean_one_weights(heads.selector(c), features_c.detach())
    prototype_weights = mean_one_weights if weight_prototypes else reference_prototype_weights
    v = prototype_weights(heads.memory_selector(c), F.normalize(prototypes, dim=1))
    return class_separation_term(features_c, prototypes, w, v)


def separation_loss(heads: SSNetHeads, features: torch.Tensor, labels: torch.Tensor,
                    memory: PrototypeMemory, weight_prototypes: bool = False,
                    recompute: bool = False) -> torch.Tensor:
    """Weighted cosine distance of predicted features (N, D) to their class prototypes.

    labels: (N,) ground truth (labelled pixels) or argmax pseudo-labels (unlabelled ones).
    Classes with no memory, fewer than 2 features or fewer than 2 prototypes add nothing; the sum
    is divided by the number of classes. Gradient reaches ``features`` and the selectors
    (``selector_c`` through the feature weights only), never the prototypes.
    weight_prototypes: False (reference) gives every prototype weight 1 (see
        :func:`reference_prototype_weights`); True uses sigmoid(memory_selector_c) rescaled to
        mean 1, as the paper describes, and then ``memory_selector_c`` is trained too.
    recompute: keep no per-pixel activations of the selectors and distances; backward recomputes
        them (:func:`ssnet.smoothness.recompute_in_backward`).
    """
    labels = labels.reshape(-1)
    loss = features.new_zeros(())
    for c, prototypes in enumerate(memory.prototypes):
        if prototypes is None or prototypes.shape[0] < 2:
            continue
        mask = labels == c
        if int(mask.sum()) < 2:
            continue
        term = partial(_class_term, heads, c, mask=mask, prototypes=prototypes.detach(),
                       weight_prototypes=weight_prototypes)
        loss = loss + (recompute_in_backward(term, features, stats_module=heads) if recompute
                       else term(features))
    return loss / memory.n_classes
