"""Ramp-up schedules for consistency weights (reference ``utils/ramps.py`` semantics)."""

from __future__ import annotations

import math


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - clip(current, 0, L) / L)^2); 1.0 when L == 0."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(float(current), 0.0), float(length)) / length
    return math.exp(-5.0 * phase * phase)


def linear_rampup(current: float, length: float) -> float:
    """min(current / L, 1); 1.0 when L == 0."""
    if length == 0:
        return 1.0
    return min(max(float(current), 0.0) / length, 1.0)


def cosine_rampdown(current: float, length: float) -> float:
    """0.5 (cos(pi current / L) + 1) for 0 <= current <= L."""
    if not 0 <= current <= length:
        raise ValueError(f"cosine_rampdown needs 0 <= current <= length, got {current}, {length}")
    return 0.5 * (math.cos(math.pi * current / length) + 1.0)


def consistency_weight(iteration: int, w_max: float, rampup_length: float, iters_per_epoch: int = 150) -> float:
    """lambda(t) = w_max * sigmoid_rampup(t // iters_per_epoch, L), as the training scripts use it."""
    return w_max * sigmoid_rampup(iteration // iters_per_epoch, rampup_length)
