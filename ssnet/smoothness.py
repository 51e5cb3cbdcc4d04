"""Pixel-level smoothness: virtual adversarial training (VAT) with a Dice distance.

SS-Net asks the segmentation to stay the same under the input perturbation that changes it most:

1. target ``p = softmax(f(x))`` without gradient (the clean pass; in train mode it updates the
   BatchNorm running statistics once, like any training forward);
2. a random direction ``d ~ U(-0.5, 0.5)``, scaled to unit L2 norm per sample;
3. ``power_iterations`` times: ``d = normalise(grad_d D(softmax(f(x + xi d)), p))``;
4. ``L = D(softmax(f(x + eps d)), p)``, with gradient for the network's parameters only.

The perturbed passes (3, 4) use batch statistics but leave the running statistics untouched.
``D`` is a Dice distance, not KL: :func:`binary_dice_distance` (3D: binary Dice over the whole
2-channel softmax tensor, so ``D(p, p) > 0`` unless ``p`` is one-hot) or :func:`soft_dice_distance`
(2D: mean per-class squared soft Dice). The power iteration only needs ``grad_d``, so its backward
skips the parameter gradients that the reference computes and then discards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.utils.checkpoint
from torch import nn

from ssnet.losses import binary_dice_loss, soft_dice_loss

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NORM_EPS = 1e-8  # added to the per-sample norm before dividing (reference ``_l2_normalize``)


def binary_dice_distance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary Dice loss over the whole (B, C, *S) probability tensor, all channels (3D VAT)."""
    return binary_dice_loss(prediction, target)


def soft_dice_distance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the C channels of the squared soft Dice loss between (B, C, *S) tensors (2D VAT)."""
    return soft_dice_loss(prediction, target)


DISTANCES: dict[str, Distance] = {"binary_dice": binary_dice_distance, "soft_dice": soft_dice_distance}


def l2_normalize_per_sample(d: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """d / (||d_b||_2 + eps) for every sample b of the leading batch dimension."""
    norm = torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1)
    return d / (norm + eps).reshape(-1, *([1] * (d.dim() - 1)))


def random_unit_direction(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu",
                          uniform_draw: torch.Tensor | None = None) -> torch.Tensor:
    """U(-0.5, 0.5) noise of ``shape``, unit L2 norm per sample.

    The uniform [0, 1) draw comes from torch's global CPU generator (so the engine's per-iteration
    seeding fixes it, identically on every device) unless ``uniform_draw`` supplies it.
    """
    if uniform_draw is None:
        uniform_draw = torch.rand(tuple(shape))
    elif tuple(uniform_draw.shape) != tuple(shape):
        raise ValueError(f"uniform_draw has shape {tuple(uniform_draw.shape)}, expected {tuple(shape)}")
    return l2_normalize_per_sample((uniform_draw - 0.5).to(device))


def _like(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``d`` with ``x``'s dtype, device and memory layout (e.g. channels-last inputs stay so)."""
    return torch.empty_like(x).copy_(d)


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Within the block, normalisation layers use batch statistics in train mode without updating
    their running statistics (``track_running_stats`` off); the flags are restored afterwards."""
    saved = [(m, m.track_running_stats) for m in module.modules() if hasattr(m, "track_running_stats")]
    try:
        for m, _ in saved:
            m.track_running_stats = False
        yield
    finally:
        for m, flag in saved:
            m.track_running_stats = flag


@contextlib.contextmanager
def scratch_running_stats(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers update copies of their running statistics; the originals
    are put back afterwards (unlike :func:`frozen_running_stats`, the layers run exactly as usual)."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [(m, {n: getattr(m, n) for n in names}) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    try:
        for m, buffers in saved:
            for name, value in buffers.items():
                setattr(m, name, value.clone())
        yield
    finally:
        for m, buffers in saved:
            for name, value in buffers.items():
                setattr(m, name, value)


def recompute_in_backward(function: Callable[..., torch.Tensor], *inputs: torch.Tensor,
                          stats_module: nn.Module):
    """``function(*inputs)`` without keeping its activations: backward runs it again.

    Gradient checkpointing that is safe for train-mode BatchNorm: the recomputation updates
    throw-away copies of the running statistics of ``stats_module`` (train mode normalises with
    batch statistics either way), so the real ones are updated once, by the original call; dropout
    masks are reproduced (the RNG state is restored). Results and gradients equal the plain call's;
    the cost is one more forward.
    """
    calls = 0

    def run(*args: torch.Tensor):
        nonlocal calls
        calls += 1
        if calls == 1:
            return function(*args)
        with scratch_running_stats(stats_module):
            return function(*args)

    return torch.utils.checkpoint.checkpoint(run, *inputs, use_reentrant=False, preserve_rng_state=True)


@contextlib.contextmanager
def repeated_running_stats_update(modules: nn.Module | Iterable[nn.Module], times: int = 2) -> Iterator[None]:
    """Within the block, each train-mode BatchNorm forward in ``modules`` updates the running statistics
    as if the same batch had passed ``times`` times: momentum m becomes 1 - (1 - m)^times and
    ``num_batches_tracked`` grows by ``times``.

    Used to reuse (the deterministic part of) the training forward for the VAT target: the reference
    runs a second clean forward of the same input, whose batch statistics are identical wherever the
    network draws no randomness.
    Raises ValueError for layers with ``momentum=None`` (cumulative average), which this cannot express.
    """
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    layers = [m for root in roots for m in root.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    if any(m.momentum is None for m in layers):
        raise ValueError("repeated_running_stats_update needs BatchNorm layers with a numeric momentum")
    def count_extra_passes(layer: nn.Module, inputs, output) -> None:
        if layer.training and layer.track_running_stats:
            layer.num_batches_tracked.add_(times - 1)

    saved = [(m, m.momentum) for m in layers]
    hooks = [m.register_forward_hook(count_extra_passes) for m in layers]
    try:
        for m, momentum in saved:
            m.momentum = 1.0 - (1.0 - momentum) ** times
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for m, momentum in saved:
            m.momentum = momentum


def has_active_dropout(module: nn.Module) -> bool:
    """True if some dropout layer of ``module`` is in train mode with p > 0 (forward is random)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
               for m in module.modules())


def _logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = network(x)
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class VATResult:
    """The smoothness loss and the two unit directions (for inspection and parity tests)."""

    loss: torch.Tensor
    d_unit: torch.Tensor  # the normalised random start direction
    d_adv: torch.Tensor  # the normalised adversarial direction after the power iteration(s)


def vat_loss(network: nn.Module, x: torch.Tensor, *, xi: float = 10.0, eps: float = 10.0,
             power_iterations: int = 1, distance: Distance | str = "binary_dice",
             target: torch.Tensor | None = None, uniform_draw: torch.Tensor | None = None) -> VATResult:
    """VAT smoothness loss of ``network`` (forward returns logits or ``(logits, ...)``) at ``x``.

    target: the clean softmax probabilities if the caller already has them from an identical pass
        (the clean pass is then skipped, including its BatchNorm update); by default they are
        computed here without gradient in the network's current mode.
    uniform_draw: the U[0, 1) draw for the random direction (tests); default ``torch.rand``.
    The returned loss has gradient for the network's parameters (not for ``x``); parameter
    ``.grad`` fields are left untouched.
    """
    distance_fn = DISTANCES[distance] if isinstance(distance, str) else distance
    if power_iterations < 1:
        raise ValueError(f"power_iterations must be >= 1, got {power_iterations}")
    x = x.detach()
    if target is None:
        with torch.no_grad():
            target = torch.softmax(_logits(network, x), dim=1)
    target = target.detach()

    d_unit = _like(x, random_unit_direction(x.shape, x.device, uniform_draw))
    d = d_unit
    with frozen_running_stats(network):
        for _ in range(power_iterations):
            d = d.detach().requires_grad_(True)
            with torch.enable_grad():
                dist = distance_fn(torch.softmax(_logits(network, x + xi * d), dim=1), target)
                (grad_d,) = torch.autograd.grad(dist, d)
            d = l2_normalize_per_sample(grad_d)
        d_adv = d.detach()
        loss = distance_fn(torch.softmax(_logits(network, x + eps * d_adv), dim=1), target)
    return VATResult(loss=loss, d_unit=d_unit, d_adv=d_adv)

