"""The one place that owns randomness.

Training is made resumable bit-for-bit by deriving every random stream from ``(seed, iteration, ...)``
instead of carrying generator state: the data for iteration ``t`` and the torch draws inside it
(dropout, VAT directions, noise) depend only on the run seed and ``t``.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def stable_int(text: str) -> int:
    """A process-independent 32-bit integer for a string (unlike ``hash``)."""
    return zlib.crc32(text.encode("utf-8"))


def rng_for(*keys: int | str) -> np.random.Generator:
    """A numpy Generator determined by the given keys (ints or strings)."""
    entropy = [k if isinstance(k, int) else stable_int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's legacy global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_iteration(seed: int, iteration: int) -> None:
    """Reseed the global generators for one training iteration (resume-exact randomness)."""
    derived = int(rng_for(seed, iteration, "torch").integers(0, 2**62))
    seed_everything(derived)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: reseed numpy and random from torch's per-worker seed."""
    base = torch.initial_seed() % 2**32
    random.seed(base + worker_id)
    np.random.seed((base + worker_id) % 2**32)


def set_deterministic(enabled: bool = True) -> None:
    """Request deterministic kernels (CPU results are then repeatable run to run).

    New tensors are not filled with NaN (``torch.utils.deterministic.fill_uninitialized_memory``, which
    deterministic mode turns on as a debugging aid): every kernel writes what it allocates, so results are
    the same, and the fill wrote every BatchNorm, convolution and dropout buffer once more (about 0.65 s of a
    5 s ACDC SS-Net step on the CPU, measured with the torch profiler).
    """
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = enabled
