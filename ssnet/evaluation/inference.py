"""Test-time inference: 3D sliding window (LA), per-slice 2D prediction (ACDC), largest component.

Conventions follow the official SS-Net test code (protocol section 9):

* 3D: zero-pad every axis shorter than the patch (``pad // 2`` before, the remainder after), place
  ``ceil((size - patch) / stride) + 1`` windows per axis with the last one clamped to the border,
  average the foreground softmax over the overlaps, threshold at 0.5 and crop the padding away.
* 2D: every slice is resized to ``size`` with nearest-neighbour zoom (order 0), the network's softmax is
  arg-maxed and the label slice is zoomed back (order 0).

Unlike the reference, windows (and slices) are pushed through the network in batches under
``torch.inference_mode()``. The model is put in eval mode for the call and its previous mode is restored
afterwards. Tensors are moved to ``device`` at the boundary only; the model must already live there
(``device=None`` uses the device of the model's first parameter).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from ssnet.losses import class_argmax
from ssnet.modes import module_mode
from ssnet.networks.fusion import FusedConvAct
from ssnet.runtime import memory_format

__all__ = [
    "largest_component",
    "pad_widths",
    "predict_volume_2d",
    "sliding_window_predict",
    "sliding_window_predict_loop",
    "window_grid",
    "window_starts",
    "zoom_slices",
]


# --------------------------------------------------------------------------------------------------
# Window geometry (shared by the batched and the one-window-at-a-time variants)
# --------------------------------------------------------------------------------------------------


def pad_widths(shape: Sequence[int], patch: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Zero padding per axis so that every axis is at least the patch: ``(pad // 2, pad - pad // 2)``."""
    widths = []
    for size, p in zip(shape, patch, strict=True):
        pad = max(int(p) - int(size), 0)
        widths.append((pad // 2, pad - pad // 2))
    return tuple(widths)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets along one axis: ``ceil((size - patch) / stride) + 1`` windows, the last clamped."""
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch ({patch}); pad first")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    n = -(-(size - patch) // stride) + 1  # integer ceil
    return [min(stride * i, size - patch) for i in range(n)]


def window_grid(
    shape: Sequence[int], patch: Sequence[int], stride_xy: int, stride_z: int
) -> list[tuple[int, int, int]]:
    """All window start corners of a (padded) 3D volume, in the reference's x-major, z-minor order."""
    sx, sy, sz = (
        window_starts(shape[0], patch[0], stride_xy),
        window_starts(shape[1], patch[1], stride_xy),
        window_starts(shape[2], patch[2], stride_z),
    )
    return [(x, y, z) for x in sx for y in sy for z in sz]


def _coverage_counts(shape: Sequence[int], patch: Sequence[int], stride_xy: int, stride_z: int) -> np.ndarray:
    """How many windows cover each voxel (float32). The grid is a product, so the count is too."""
    per_axis = []
    for size, p, stride in zip(shape, patch, (stride_xy, stride_xy, stride_z), strict=True):
        c = np.zeros(size, dtype=np.float32)
        for s in window_starts(size, p, stride):
            c[s : s + p] += 1
        per_axis.append(c)
    return per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]


def _prepare_3d(image: np.ndarray, patch: Sequence[int], stride_xy: int, stride_z: int):
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a 3D (X, Y, Z) volume, got shape {image.shape}")
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3:
        raise ValueError(f"patch must have 3 sizes, got {patch}")
    widths = pad_widths(image.shape, patch)
    padded = image.astype(np.float32, copy=False)
    if any(lo or hi for lo, hi in widths):
        padded = np.pad(padded, widths, mode="constant", constant_values=0)
    grid = window_grid(padded.shape, patch, stride_xy, stride_z)
    return padded, patch, widths, grid


def _finish_3d(score: np.ndarray, cnt: np.ndarray, widths, original_shape) -> tuple[np.ndarray, np.ndarray]:
    prob = score / cnt
    pred = (prob > 0.5).astype(np.uint8)
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, original_shape, strict=True))
    return np.ascontiguousarray(pred[crop]), np.ascontiguousarray(prob[crop], dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------------------------------


def _logits(output) -> torch.Tensor:
    """The network's logits: the output itself or the first element of a tuple/list output."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"model returned {type(output).__name__}, expected a tensor or a tuple of tensors")
    return output


def _resolve_device(model: torch.nn.Module, device) -> torch.device:
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(device)


def _input_layout(model: torch.nn.Module) -> torch.memory_format:
    """The memory layout batches are given in: channels-last when the model's convolution weights are
    (training and evaluation move the network there with ``channels_last: true``), else contiguous.
    Weights that fit both layouts (one input channel, 1x1 kernels) do not decide."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, FusedConvAct)) and not m.weight.is_contiguous():
            layout = memory_format(True, m.weight.dim() - 2)
            return layout if m.weight.is_contiguous(memory_format=layout) else torch.contiguous_format
    return torch.contiguous_format


def _check_classes(logits: torch.Tensor, n_classes: int) -> None:
    if logits.shape[1] != n_classes:
        raise ValueError(f"model produced {logits.shape[1]} channels, expected n_classes={n_classes}")


# --------------------------------------------------------------------------------------------------
# 3D sliding window
# --------------------------------------------------------------------------------------------------


def sliding_window_predict(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: Sequence[int] = (112, 112, 80),
    stride_xy: int = 18,
    stride_z: int = 4,
    n_classes: int = 2,
    batch_size: int = 8,
    device="cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window prediction of one (X, Y, Z) volume, windows stacked ``batch_size`` at a time.

    Returns ``(prediction, foreground_prob)``: the uint8 label map (``foreground_prob > 0.5``) and the
    float32 softmax probability of class 1 averaged over all windows covering each voxel, both (X, Y, Z).
    (The reference returns the averaged foreground probability copied into every one of its
    ``num_classes`` score channels; this returns it once.)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    padded, patch, widths, grid = _prepare_3d(image, patch, stride_xy, stride_z)
    dev = _resolve_device(model, device)
    px, py, pz = patch
    layout = _input_layout(model)
    with module_mode(model, False), torch.inference_mode():
        volume = torch.from_numpy(padded).to(dev)
        score = torch.zeros(padded.shape, dtype=torch.float32, device=dev)
        for first in range(0, len(grid), batch_size):
            corners = grid[first : first + batch_size]
            batch = torch.stack([volume[x : x + px, y : y + py, z : z + pz] for x, y, z in corners]).unsqueeze(1)
            batch = batch.contiguous(memory_format=layout)
            logits = _logits(model(batch))
            _check_classes(logits, n_classes)
            fg = F.softmax(logits, dim=1)[:, 1]
            # Accumulate in window order, as the reference does (same float32 summation order).
            for k, (x, y, z) in enumerate(corners):
                score[x : x + px, y : y + py, z : z + pz] += fg[k]
        score_np = score.cpu().numpy()
    cnt = _coverage_counts(padded.shape, patch, stride_xy, stride_z)
    return _finish_3d(score_np, cnt, widths, np.shape(image))


def sliding_window_predict_loop(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: Sequence[int] = (112, 112, 80),
    stride_xy: int = 18,
    stride_z: int = 4,
    n_classes: int = 2,
    device="cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """One forward per window, accumulated in numpy (the reference's structure). For tests and benchmarks."""
    padded, patch, widths, grid = _prepare_3d(image, patch, stride_xy, stride_z)
    dev = _resolve_device(model, device)
    px, py, pz = patch
    score = np.zeros(padded.shape, dtype=np.float32)
    with module_mode(model, False), torch.no_grad():
        for x, y, z in grid:
            window = torch.from_numpy(np.ascontiguousarray(padded[x : x + px, y : y + py, z : z + pz]))
            logits = _logits(model(window[None, None].to(dev)))
            _check_classes(logits, n_classes)
            fg = F.softmax(logits, dim=1)[0, 1].cpu().numpy()
            score[x : x + px, y : y + py, z : z + pz] += fg
    cnt = _coverage_counts(padded.shape, patch, stride_xy, stride_z)
    return _finish_3d(score, cnt, widths, np.shape(image))


# --------------------------------------------------------------------------------------------------
# Largest connected component
# --------------------------------------------------------------------------------------------------


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a binary mask (full connectivity: 26 neighbours in 3D).

    Matches the reference ``getLargestCC`` (skimage ``label`` default = full connectivity); on a tie
    the component met first in C-order scanning wins. Unlike the reference, which asserts, an empty
    mask gives an empty (all False) mask.
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    labels, n = scipy.ndimage.label(mask, structure=structure)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


# --------------------------------------------------------------------------------------------------
# 2D per-slice prediction (ACDC)
# --------------------------------------------------------------------------------------------------


def zoom_slices(slices: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Each (H, W) slice of ``slices`` (N, H, W) zoomed to ``size`` with order 0, as the reference
    ``test_single_volume`` feeds its network: (N, *size), the input's dtype."""
    h, w = slices.shape[1:]
    return np.stack([scipy.ndimage.zoom(image, (size[0] / h, size[1] / w), order=0) for image in slices])


def predict_volume_2d(
    model: torch.nn.Module,
    volume: np.ndarray,
    size: Sequence[int] = (256, 256),
    batch_size: int = 16,
    device="cpu",
) -> np.ndarray:
    """Per-slice 2D prediction of a (Z, H, W) volume, ``batch_size`` slices per forward.

    Each slice is zoomed to ``size`` (order 0), the argmax of the softmax is taken and the label slice is
    zoomed back to (H, W) with order 0, exactly as the reference ``test_single_volume``. Returns uint8.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {volume.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_slices, h, w = volume.shape
    th, tw = int(size[0]), int(size[1])
    prediction = np.zeros(volume.shape, dtype=np.uint8)
    if n_slices == 0:
        return prediction
    zoom_out = (h / th, w / tw)
    dev = _resolve_device(model, device)
    layout = _input_layout(model)
    with module_mode(model, False), torch.inference_mode():
        for first in range(0, n_slices, batch_size):
            idx = range(first, min(first + batch_size, n_slices))
            slices = zoom_slices(volume[idx.start:idx.stop], (th, tw))
            batch = torch.from_numpy(slices.astype(np.float32, copy=False)).unsqueeze(1).to(dev)
            batch = batch.contiguous(memory_format=layout)
            logits = _logits(model(batch))
            labels = class_argmax(torch.softmax(logits, dim=1)).cpu().numpy()
            for k, i in enumerate(idx):
                prediction[i] = scipy.ndimage.zoom(labels[k], zoom_out, order=0)
    return prediction
