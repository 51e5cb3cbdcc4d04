"""benchmarks/memory_phases.py: samples are booked to the innermost phase and see the bytes held in it."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
memory_phases = pytest.importorskip("memory_phases")

HELD_BYTES = 256 * 2 ** 20


def sample_while(sampler, seconds: float) -> None:
    """Run the sampler's loop in this thread for about ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sampler.record()


def test_phase_sees_the_buffer_held_in_it():
    try:
        sampler = memory_phases.PhaseSampler(0.001)
    except SystemExit:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    with sampler.phase("before"):
        sample_while(sampler, 0.05)
    with sampler.phase("holding"):
        buffer = np.ones(HELD_BYTES // 8)  # touched: resident and in use
        with sampler.phase("holding"):  # nested: booked to the inner one, numbered #1
            sample_while(sampler, 0.05)
        del buffer
    before, held = sampler.peaks["before #0"], sampler.peaks["holding #1"]
    rss, live = 0, 1
    assert held[live] - before[live] >= 0.9 * HELD_BYTES / 1e9
    assert held[rss] >= HELD_BYTES / 1e9  # resident (may reuse pages freed earlier in the process)
    assert "holding #0" not in sampler.peaks  # every sample went to the innermost phase
    assert sampler.stack == ["setup"]
