"""Process-level settings of training and evaluation: the device, and speed settings that leave the
maths alone (memory layout and glibc malloc).

- ``device``: ``auto`` (CUDA when torch sees it, else CPU), ``cpu`` or ``cuda``.

- ``channels_last``: the network's convolution weights and every input batch in channels-last layout
  (``torch.channels_last`` in 2D, ``torch.channels_last_3d`` in 3D). Same operations; the float
  summation order inside the convolutions differs, so results differ in the last bits from the
  contiguous layout (and are as deterministic). The dropout masks are the same in both layouts (the
  UNet's element-wise dropout draws in logical order: ``LayoutIndependentDropout``; VNet's channel
  dropout does not depend on the layout). On by default; evaluation uses the run's layout.
- ``cpu_allocator``: glibc's ``M_MMAP_THRESHOLD`` / ``M_TRIM_THRESHOLD`` (``mallopt``). By default glibc
  serves large buffers with ``mmap`` and returns them to the system on free, so every training
  iteration page-faults its activation memory back in; raising both thresholds keeps freed buffers
  in the heap for reuse (faster on CPU, higher resident peak). Bit-identical results. Training applies
  its config's setting (default 2047 / 2047); evaluation applies the setting the run was trained with.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Callable, Mapping

import torch

from ssnet.devices import no_gpu_message, pin_job
from ssnet.devices import resolve_device as workflow_device
from ssnet.errors import ConfigError

MALLOPT_OPTIONS = {"M_MMAP_THRESHOLD": -3, "M_TRIM_THRESHOLD": -1}  # glibc <malloc.h>
MAX_THRESHOLD_MB = 2047  # mallopt takes a C int (bytes)


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


@functools.lru_cache(maxsize=None)
def c_library() -> ctypes.CDLL:
    """The process's C library (glibc on Linux), loaded once."""
    return ctypes.CDLL(ctypes.util.find_library("c"))


def configure_malloc(mmap_threshold_mb: int | None, trim_threshold_mb: int | None,
                     warn: Callable[[str], None] = print) -> dict[str, int]:
    """Set glibc's mmap and trim thresholds (MiB; None leaves that one at glibc's default).

    Returns the settings applied, in bytes. Where the C library has no ``mallopt`` (not glibc), calls
    ``warn`` and applies nothing; raises ConfigError for a value glibc refuses or out of range.
    """
    wanted = {"M_MMAP_THRESHOLD": ("mmap_threshold_mb", mmap_threshold_mb),
              "M_TRIM_THRESHOLD": ("trim_threshold_mb", trim_threshold_mb)}
    wanted = {name: (key, mb) for name, (key, mb) in wanted.items() if mb is not None}
    if not wanted:
        return {}
    libc = c_library()
    if not hasattr(libc, "mallopt"):
        warn("cpu_allocator: this C library has no mallopt (not glibc); the thresholds are not applied")
        return {}
    applied = {}
    for name, (key, mb) in wanted.items():
        if not 0 <= mb <= MAX_THRESHOLD_MB:
            raise ConfigError(f"cpu_allocator.{key} must be between 0 and {MAX_THRESHOLD_MB}, got {mb}")
        if libc.mallopt(ctypes.c_int(MALLOPT_OPTIONS[name]), ctypes.c_int(mb << 20)) != 1:
            raise ConfigError(f"cpu_allocator.{key}: glibc mallopt refused {mb} MiB")
        applied[name] = mb << 20
    return applied


def apply_cpu_allocator(run_cfg: Mapping, warn: Callable[[str], None] = print) -> dict[str, int]:
    """:func:`configure_malloc` with a run config's ``cpu_allocator`` block (null values: glibc defaults)."""
    allocator = run_cfg["cpu_allocator"]
    return configure_malloc(allocator["mmap_threshold_mb"], allocator["trim_threshold_mb"], warn)
