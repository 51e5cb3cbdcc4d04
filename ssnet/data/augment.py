"""Training augmentations (protocol §4), driven by an explicit numpy Generator.

Each function takes an image and an optional label (unlabelled samples carry none) and applies the
same spatial transform to both, so they stay aligned. A dataset's ``augment`` method
(:mod:`ssnet.datasets`) names its pipeline.

The maths is the reference's (rot90/flip, zero padding and a random crop for LA; rot90/flip or an
order-0 rotation, then an order-0 ``scipy.ndimage.zoom`` for ACDC), computed without touching more
data than the output needs: rot90, flip and crops are numpy views of the stored arrays, the padding is
virtual, and ACDC's transforms act on a map of source positions that is gathered once at the end.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

Pair = tuple[np.ndarray, np.ndarray | None]


def _apply(fn, image: np.ndarray, label: np.ndarray | None) -> Pair:
    return fn(image), (None if label is None else fn(label))


def random_rot_flip(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
    """rot90 by k in 0..3 in the plane of axes (0, 1), then a flip along axis 0 or 1 (views, no copy)."""
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    return _apply(lambda a: np.flip(np.rot90(a, k), axis=axis), image, label)


def random_rotate(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, max_angle: int = 20) -> Pair:
    """In-plane rotation by an integer angle in [-max_angle, max_angle), nearest neighbour, same shape."""
    angle = int(rng.integers(-max_angle, max_angle))
    return _apply(lambda a: ndimage.rotate(a, angle, order=0, reshape=False), image, label)


def pad_widths(shape: Sequence[int], patch: Sequence[int], extra: int = 3) -> list[int]:
    """Zero padding per side of every axis: max((patch - size)//2 + extra, 0) when any side <= the patch, else 0."""
    if all(s > p for s, p in zip(shape, patch)):
        return [0] * len(shape)
    return [max((p - s) // 2 + extra, 0) for s, p in zip(shape, patch)]


def window(array: np.ndarray, origin: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[origin : origin + size]`` per axis with zeros outside the array: a view when it lies inside."""
    inside = tuple(slice(max(o, 0), min(o + n, s)) for o, n, s in zip(origin, size, array.shape))
    if all(o >= 0 and o + n <= s for o, n, s in zip(origin, size, array.shape)):
        return array[inside]
    out = np.zeros(tuple(size), array.dtype)
    out[tuple(slice(cut.start - o, cut.stop - o) for cut, o in zip(inside, origin))] = array[inside]
    return out


def random_crop(
    image: np.ndarray, label: np.ndarray | None, patch: Sequence[int], rng: np.random.Generator, extra: int = 3
) -> Pair:
    """Zero-pad by :func:`pad_widths`, then crop a patch at an offset drawn uniformly from [0, size - patch)
    per axis of the padded arrays (an axis with size <= patch starts at 0 and keeps its size). The padding
    is never built."""
    widths = pad_widths(image.shape, patch, extra)
    padded = [s + 2 * w for s, w in zip(image.shape, widths)]
    starts = [int(rng.integers(0, s - p)) if s > p else 0 for s, p in zip(padded, patch)]
    origin = [o - w for o, w in zip(starts, widths)]
    size = [min(p, s) for p, s in zip(patch, padded)]
    return _apply(lambda a: window(a, origin, size), image, label)


@lru_cache(maxsize=None)
def zoom_indices(size: int, target: int) -> np.ndarray:
    """1-based source index of every output position of an order-0 ``scipy.ndimage.zoom`` of an axis of
    ``size`` to ``target``, 0 where scipy finds the position outside and writes 0: scipy's own arithmetic
    and rounding, run on the positions (order 0 zooms axis by axis)."""
    return ndimage.zoom(np.arange(1, size + 1, dtype=np.float64), target / size, order=0).astype(np.intp)


def zoom_to(image: np.ndarray, label: np.ndarray | None, size: Sequence[int]) -> Pair:
    """Nearest-neighbour (order 0) zoom of both arrays to ``size``: ``scipy.ndimage.zoom(order=0)``'s output,
    gathered from the arrays led by a zero along every axis."""
    indices = [zoom_indices(s, t) for s, t in zip(image.shape, size)]
    return _apply(lambda a: _take(np.pad(a, [(1, 0)] * a.ndim), indices), image, label)


def _take(array: np.ndarray, indices: Sequence[np.ndarray]) -> np.ndarray:
    """``array[np.ix_(*indices)]``, one axis at a time."""
    for axis, index in enumerate(indices):
        array = array.take(index, axis)
    return array


def augment_la(image, label, rng: np.random.Generator, patch: Sequence[int], pad_extra: int = 3) -> Pair:
    """LA: random rot90 + flip, then random crop of ``patch`` (x, y, z); views of the inputs where possible."""
    image, label = random_rot_flip(image, label, rng)
    return random_crop(image, label, patch, rng, pad_extra)


def _gather(array: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``array`` at the 1-based flat positions ``source``; 0 where ``source`` is 0."""
    return np.concatenate((np.zeros(1, array.dtype), array.ravel())).take(source)


def augment_acdc(image, label, rng: np.random.Generator, patch: Sequence[int]) -> Pair:
    """ACDC: p=0.5 rot90+flip, else p=0.5 rotation in [-20, 20); then zoom to ``patch`` (order 0).

    The transforms move every pixel as a whole (order 0, zero fill), so they are applied to a map of the
    1-based source positions (float32 holds them exactly below 2**24 pixels), and image and label are
    gathered from it once.
    """
    dtype = np.float32 if image.size < 2**24 else np.float64
    source = np.arange(1, image.size + 1, dtype=dtype).reshape(image.shape)
    if rng.random() > 0.5:
        source, _ = random_rot_flip(source, None, rng)
    elif rng.random() > 0.5:
        source, _ = random_rotate(source, None, rng)
    source, _ = zoom_to(source, None, patch)
    return _apply(lambda a: _gather(a, source.astype(np.intp)), image, label)
