"""Shared by the parity tests (``tests/test_parity_*.py`` and their helper modules) and the hand-run vector
generators (``tests/golden/make_*.py``, which put ``tests/`` on ``sys.path``). Imports numpy and torch only,
so a generator can use it without the pipeline installed.

- Reference code: :func:`purge_reference_modules` / :func:`import_reference` (the reference repositories
  share the package names ``networks``, ``utils``, ``dataloaders``), :func:`cuda_noop` /
  :func:`install_cuda_shims` (``.cuda()`` is a no-op on CPU), :func:`sha256`, :func:`environment`.
- Seeded synthetic inputs and weights: :func:`blobs` (smooth images), :func:`synthetic_state` (the weights
  of a case, regenerated from (tensor names and shapes, seed) so the vectors need not store them).
- Statistics and comparisons: :func:`tensor_stats` (per-tensor [L2 norm, sum]), :func:`fingerprint`,
  :func:`assert_stats`, :func:`assert_norms_close`.
"""

from __future__ import annotations

import hashlib
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REFERENCE_PACKAGES = ("networks", "utils", "dataloaders")


# ------------------------------------------------------------------------------ reference code
def purge_reference_modules(packages: tuple[str, ...] = REFERENCE_PACKAGES) -> None:
    """Drop the imported modules of ``packages`` (another reference repository's of the same name)."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


def import_reference(code_dir: Path, modules: list[str]) -> dict:
    """Import ``modules`` from ``code_dir`` (the repos share package names: purge them first)."""
    purge_reference_modules()
    sys.path.insert(0, str(code_dir))
    try:
        return {m: __import__(m, fromlist=["_"]) for m in modules}
    finally:
        sys.path.remove(str(code_dir))


def cuda_noop(self, *args, **kwargs):
    """``Tensor.cuda`` / ``Module.cuda`` stand-in for a CPU run: returns ``self``."""
    return self


def install_cuda_shims() -> None:
    """``.cuda()`` is a no-op on tensors and modules (CPU run)."""
    torch.Tensor.cuda = cuda_noop
    nn.Module.cuda = cuda_noop


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------ seeded synthetic data
def blobs(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Smooth random images (B, 1, *S): Gaussian noise averaged over 5-wide windows, unit std."""
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    pool = F.avg_pool3d if len(shape) == 5 else F.avg_pool2d
    x = pool(x, 5, stride=1, padding=2, count_include_pad=False)
    return ((x - x.mean()) / x.std()).to(torch.float32)


def _draw(name: str, shape: tuple[int, ...], u: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Map uniform [0, 1) draws ``u`` (float64) to a value range suited to the tensor's role."""
    kind = name.rsplit(".", 1)[-1]
    if len(shape) > 1:  # conv / transposed-conv / linear weight: uniform with variance 1 / fan
        bound = math.sqrt(3.0 / int(np.prod(shape[1:])))
        return (2 * u - 1) * bound * (logit_scale if "out_conv" in name else 1.0)
    if kind in ("weight", "running_var"):  # BatchNorm scale, running variance
        return 0.5 + u
    return 0.2 * u - 0.1  # biases, running means


def synthetic_state(entries: list[tuple[str, list[int]]], seed: int, logit_scale: float) -> dict:
    """A state dict for the (name, shape) ``entries`` in order: one float64 draw from a generator seeded
    with ``seed`` per tensor, mapped by :func:`_draw` and cast to float32; ``num_batches_tracked`` = 0.

    ``logit_scale`` widens the output conv (confident predictions, clear argmax margins; for UA-MT, some
    pixels under the entropy threshold and others not).
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in entries:
        shape = tuple(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        u = torch.rand(shape, generator=g, dtype=torch.float64)
        state[name] = _draw(name, shape, u, logit_scale).to(torch.float32)
    return state


# ---------------------------------------------------------------------- statistics, comparisons
def tensor_stats(tensors) -> np.ndarray:
    """(n, 2) float64: [L2 norm, sum] of each tensor, computed in float64 (a missing gradient counts as
    zeros)."""
    rows = []
    for t in tensors:
        t = torch.zeros(1) if t is None else t.detach().double()
        rows.append([float(torch.linalg.vector_norm(t)), float(t.sum())])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def fingerprint(t: torch.Tensor) -> list[float]:
    """[L2 norm, sum(t * cos(0.7 i)), sum(max(t, 0))] of a tensor in float64 (i = flat index): a compact
    gradient check (a plain sum is useless for softmax gradients, which sum to 0 over the classes)."""
    flat = t.detach().double().flatten()
    weights = torch.cos(0.7 * torch.arange(flat.numel(), dtype=torch.float64))
    return [float(flat.norm()), float((flat * weights).sum()), float(flat.clamp(min=0).sum())]


# Tolerances that hold across CPUs: the golden vectors were made on an Intel Xeon; on an AMD EPYC (AVX-512,
# other oneDNN / BLAS kernels) the float32 cases measured at most 1.6e-6 (norms, relative) and 9e-6 (sums,
# relative to the tensor's norm), and the gradients that are zero up to rounding (conv biases before BatchNorm)
# at most 3.3e-6 in absolute value, against 2.3-11 for the largest gradient norm of the case.
SUM_RTOL_FACTOR = 4  # a sum's rounding error scales with the tensor's norm (cancellation), not with the sum
ROUNDING_ZERO = 1e-5  # tensors whose reference norm is below this x the case's largest norm are zero up to rounding


def assert_stats(ours: np.ndarray, ref: np.ndarray, names: list[str], what: str, rtol: float, atol: float) -> None:
    """Per-tensor [L2 norm, sum]: norm within rtol * norm_b + atol * (1 + norm_b), sum within
    max(rtol * |sum_b|, SUM_RTOL_FACTOR * rtol * norm_b) + atol * (1 + norm_b). A tensor that is zero up to
    rounding on the reference side (norm below ``ROUNDING_ZERO`` x the largest norm) must be so on ours:
    both of its statistics within that floor of 0."""
    norm_b = ref[:, :1]
    bound = np.maximum(rtol * np.abs(ref), [0.0, SUM_RTOL_FACTOR * rtol] * norm_b) + atol * (1.0 + norm_b)
    mismatch = np.abs(ours - ref) > bound
    floor = ROUNDING_ZERO * ref[:, 0].max()
    zero = ref[:, 0] < floor
    mismatch[zero] = np.abs(ours[zero]) > floor
    bad = np.argwhere(mismatch)
    detail = [f"{names[i]} {['norm', 'sum'][j]}: ours {ours[i, j]:.9g} ref {ref[i, j]:.9g}" for i, j in bad[:8]]
    assert not len(bad), f"{what}: {len(bad)} mismatches\n" + "\n".join(detail)


def assert_norms_close(ours: dict, expected: dict, rtol: float = 1e-4, total_rtol: float = 1e-5,
                       floor: float = 1e-6) -> None:
    """Per-parameter norms (same keys) within ``rtol * |v| + floor * max|v|``, and the vector of all norms
    within ``total_rtol`` (relative L2). The floor covers the conv biases before BatchNorm, whose gradient
    is 0 up to rounding; float32 reductions (bias and BatchNorm-weight gradients sum over every voxel)
    make single norms differ by up to ~3e-5 relative between two correct implementations."""
    assert sorted(ours) == sorted(expected)
    keys = sorted(expected)
    ref = np.array([expected[k] for k in keys])
    got = np.array([ours[k] for k in keys])
    bad = [k for k, a, b in zip(keys, got, ref) if abs(a - b) > rtol * abs(b) + floor * ref.max()]
    assert not bad, {k: (ours[k], expected[k]) for k in bad[:5]}
    assert np.linalg.norm(got - ref) <= total_rtol * np.linalg.norm(ref)
