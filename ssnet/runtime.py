"""Process-level settings of training and evaluation: the device, and the memory layout (a speed setting
that leaves the maths alone; the memory allocator is :mod:`ssnet.allocator`).

- ``device``: ``auto`` (CUDA when torch sees it, else CPU), ``cpu`` or ``cuda``.

- ``channels_last``: the network's convolution weights and every input batch in channels-last layout
  (``torch.channels_last`` in 2D, ``torch.channels_last_3d`` in 3D). Same operations; the float
  summation order inside the convolutions differs, so results differ in the last bits from the
  contiguous layout (and are as deterministic). The dropout masks are the same in both layouts (the
  UNet's element-wise dropout draws in logical order: ``LayoutIndependentDropout``; VNet's channel
  dropout does not depend on the layout). On by default; evaluation uses the run's layout.
"""

from __future__ import annotations

import os

import torch

from ssnet.devices import no_gpu_message, pin_job
from ssnet.devices import resolve_device as workflow_device
from ssnet.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device of a run's ``device`` (``auto``: CUDA when a GPU is visible, decided without
    initialising CUDA). A CUDA job is pinned to a free GPU slot before CUDA starts
    (:func:`ssnet.devices.pin_job`); ConfigError when it cannot use a GPU."""
    if name == "auto":
        name = workflow_device("auto").device
    if name == "cuda":
        pin_job("cuda")
        if not torch.cuda.is_available():
            raise ConfigError(no_gpu_message("cuda", f"torch {torch.__version__} reports no CUDA device; "
                                             f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"))
    return torch.device(name)


def memory_format(channels_last: bool, dim: int) -> torch.memory_format:
    """The layout for ``dim``-D images (2 or 3): channels-last if asked, contiguous otherwise."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if dim == 3 else torch.channels_last
