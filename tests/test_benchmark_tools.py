"""The measuring helpers the side-by-side benchmarks rest on (``benchmarks/step_time.py``): a worker's peak
memory must be its own, and the calibrated output convolution must give balanced, sharp predictions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import step_time  # noqa: E402  (benchmarks/ is not a package)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_worker_peak_is_its_own_not_the_spawning_process():
    """A worker started by a process holding 400 MB that touches 100 MB itself reports about 0.1 GB (Linux's
    ``ru_maxrss`` carries the parent's peak over the exec: it reported >= 0.42 GB here)."""
    held = np.ones(400 * 2**20 // 8)  # touched: resident in this process
    child = ("import sys; import numpy as np; sys.path.insert(0, sys.argv[1]); import step_time; "
             "block = np.ones(100 * 2**20 // 8); print(step_time.peak_gb())")
    out = subprocess.run([sys.executable, "-c", child, str(BENCHMARKS)], capture_output=True, text=True, check=True)
    assert held.sum() > 0
    own = float(out.stdout)
    assert 0.1 <= own < 0.3, f"worker peak {own:.3f} GB: not its own 0.1 GB block plus imports"


@pytest.mark.parametrize("n_classes,dim", [(2, 2), (4, 2), (2, 3)])
def test_calibrate_output_balances_and_sharpens(n_classes, dim):
    """An init whose class 0 wins everywhere on flat logits: afterwards every class has the same mean
    probability, a similar share of the argmax, and the class contrast has std ``spread`` (2)."""
    torch.manual_seed(0)
    conv = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dim]
    body, out_conv = conv(1, 8, 3, padding=1), conv(8, n_classes, 1)
    with torch.no_grad():
        out_conv.weight *= 0.1  # flat
        out_conv.bias[0] += 5.0  # class 0 everywhere

    def model(x):
        return out_conv(torch.tanh(body(x))), None

    batch = torch.randn(4, 1, *(16,) * dim)
    with torch.no_grad():
        assert (model(batch)[0].argmax(1) == 0).all()
    means = step_time.calibrate_output(model, out_conv, batch)
    assert means == pytest.approx([1.0 / n_classes] * n_classes, abs=1e-3)
    with torch.no_grad():
        logits = model(batch)[0]
    shares = torch.bincount(logits.argmax(1).flatten(), minlength=n_classes) / logits[:, 0].numel()
    assert shares.min() > 0.5 / n_classes and shares.max() < 1.5 / n_classes
    assert step_time.class_contrast(logits.double()).std().item() == pytest.approx(2.0, rel=1e-3)
