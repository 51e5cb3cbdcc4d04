"""Dice-family losses with the reference implementation's exact reductions.

Shapes: ``(B, C, *spatial)`` for class-channel tensors, ``(B, 1, *spatial)`` or ``(B, *spatial)``
for integer label maps. All losses are differentiable w.r.t. the prediction only.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def binary_dice_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps) over the whole tensor (reference ``Binary_dice_loss``)."""
    target = target.to(prediction.dtype)
    intersection = 2.0 * torch.sum(prediction * target) + eps
    union = torch.sum(prediction) + torch.sum(target) + eps
    return 1.0 - intersection / union


def _squared_dice_loss(score: torch.Tensor, target: torch.Tensor, smooth: float = 1e-10) -> torch.Tensor:
    """1 - (2 sum(s t) + smooth) / (sum(s^2) + sum(t^2) + smooth) for one class channel."""
    target = target.to(score.dtype)
    intersect = torch.sum(score * target)
    return 1.0 - (2.0 * intersect + smooth) / (torch.sum(score * score) + torch.sum(target * target) + smooth)


def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Index of the largest class score, the first on ties (= ``scores.argmax(dim=1)``): (B, C, *S) -> (B, *S).

    A running comparison over the C channels: a few element-wise passes, where ``argmax`` over dim 1
    of a contiguous CPU tensor is a strided reduction 10-30x slower. NaN-free scores assumed.
    """
    best, index = scores[:, 0], torch.zeros(scores[:, 0].shape, dtype=torch.long, device=scores.device)
    for c in range(1, scores.shape[1]):
        index = torch.where(scores[:, c] > best, c, index)
        best = torch.maximum(best, scores[:, c])
    return index


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, 1, *S) or (B, *S) integer labels -> (B, C, *S) float one-hot."""
    if labels.dim() >= 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return F.one_hot(labels.long(), n_classes).movedim(-1, 1).float()


def dice_loss(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    softmax: bool = False,
    weight: Sequence[float] | None = None,
) -> torch.Tensor:
    """Mean over classes of the squared soft Dice loss (reference ``DiceLoss``).

    inputs: (B, C, *S) probabilities, or logits with ``softmax=True``; labels: integer map.
    A weighted sum is divided by ``n_classes``, not by the sum of the weights (reference behaviour).
    """
    if softmax:
        inputs = torch.softmax(inputs, dim=1)
    target = one_hot(labels, n_classes)
    weight = [1.0] * n_classes if weight is None else list(weight)
    total = sum(_squared_dice_loss(inputs[:, c], target[:, c]) * weight[c] for c in range(n_classes))
    return total / n_classes


def soft_dice_loss(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the squared soft Dice loss between two (B, C, *S) tensors (``softDiceLoss``)."""
    if inputs.shape != target.shape:
        raise ValueError(f"soft_dice_loss needs equal shapes, got {tuple(inputs.shape)} and {tuple(target.shape)}")
    n_classes = inputs.shape[1]
    return sum(_squared_dice_loss(inputs[:, c], target[:, c]) for c in range(n_classes)) / n_classes


def halved_dice_loss(inputs: torch.Tensor, labels: torch.Tensor, n_classes: int, smooth: float = 1e-10) -> torch.Tensor:
    """Mean over classes of 1 - sum(s t) / (sum(s^2) + sum(t^2) + smooth): the squared soft Dice without the
    factor 2 (MC-Net ``code/utils/losses.py`` ``DiceLoss._dice_loss``), so a perfect prediction gives 0.5.

    inputs: (B, C, *S) probabilities; labels: integer map (B, *S) or (B, 1, *S).
    """
    target = one_hot(labels, n_classes).to(inputs.dtype)
    total = 0.0
    for c in range(n_classes):
        score, t = inputs[:, c], target[:, c]
        total = total + (1.0 - torch.sum(score * t) / (torch.sum(score * score) + torch.sum(t * t) + smooth))
    return total / n_classes
