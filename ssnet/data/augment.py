"""Training augmentations (protocol §4), driven by an explicit numpy Generator.

Each function takes an image and an optional label (unlabelled samples carry none) and applies the
same spatial transform to both, so they stay aligned. A dataset's ``augment`` method
(:mod:`ssnet.datasets`) names its pipeline.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

Pair = tuple[np.ndarray, np.ndarray | None]


def _apply(fn, image: np.ndarray, label: np.ndarray | None) -> Pair:
    return fn(image), (None if label is None else fn(label))


def random_rot_flip(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
    """rot90 by k in 0..3 in the plane of axes (0, 1), then a flip along axis 0 or 1."""
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    return _apply(lambda a: np.ascontiguousarray(np.flip(np.rot90(a, k), axis=axis)), image, label)


def random_rotate(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, max_angle: int = 20) -> Pair:
    """In-plane rotation by an integer angle in [-max_angle, max_angle), nearest neighbour, same shape."""
    angle = int(rng.integers(-max_angle, max_angle))
    return _apply(lambda a: ndimage.rotate(a, angle, order=0, reshape=False), image, label)


def pad_for_patch(image: np.ndarray, label: np.ndarray | None, patch: Sequence[int], extra: int = 3) -> Pair:
    """Zero-pad every axis by max((patch - size)//2 + extra, 0) per side when any side <= the patch."""
    if all(s > p for s, p in zip(image.shape, patch)):
        return image, label
    widths = [(w, w) for w in (max((p - s) // 2 + extra, 0) for s, p in zip(image.shape, patch))]
    return _apply(lambda a: np.pad(a, widths, mode="constant", constant_values=0), image, label)


def random_crop(
    image: np.ndarray, label: np.ndarray | None, patch: Sequence[int], rng: np.random.Generator, extra: int = 3
) -> Pair:
    """Pad if needed, then crop a patch at an offset drawn uniformly from [0, size - patch) per axis."""
    image, label = pad_for_patch(image, label, patch, extra)
    starts = [int(rng.integers(0, s - p)) if s > p else 0 for s, p in zip(image.shape, patch)]
    window = tuple(slice(o, o + p) for o, p in zip(starts, patch))
    return _apply(lambda a: a[window], image, label)


def zoom_to(image: np.ndarray, label: np.ndarray | None, size: Sequence[int]) -> Pair:
    """Nearest-neighbour (order 0) zoom of both arrays to ``size``."""
    factors = [t / s for t, s in zip(size, image.shape)]
    return _apply(lambda a: ndimage.zoom(a, factors, order=0), image, label)


def augment_la(image, label, rng: np.random.Generator, patch: Sequence[int], pad_extra: int = 3) -> Pair:
    """LA: random rot90 + flip, then random crop of ``patch`` (x, y, z)."""
    image, label = random_rot_flip(image, label, rng)
    return random_crop(image, label, patch, rng, pad_extra)


def augment_acdc(image, label, rng: np.random.Generator, patch: Sequence[int]) -> Pair:
    """ACDC: p=0.5 rot90+flip, else p=0.5 rotation in [-20, 20); then zoom to ``patch`` (order 0)."""
    if rng.random() > 0.5:
        image, label = random_rot_flip(image, label, rng)
    elif rng.random() > 0.5:
        image, label = random_rotate(image, label, rng)
    return zoom_to(image, label, patch)
