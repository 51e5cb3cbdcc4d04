"""Benchmark: where an SS-Net training iteration's memory goes on CPU, phase by phase: the bytes the
program holds (live) against the resident memory the process keeps (RSS, what peak-memory ratios compare).

A background thread samples, every ``--interval-ms``, the resident set (``/proc/self/statm``) and glibc's
allocator counters (``mallinfo2``: live = bytes in use, heap = bytes the heap spans, free = bytes free
inside it; glibc >= 2.33) while one warm-up and ``--repeats`` iterations of ``step_time.py``'s setup run.
Each sample is booked to the innermost running phase: the network's forward, the separation losses, the
VAT call, each backward (in order: the staged one first). The table lists every phase occurrence of the
measured iterations with the largest value of each quantity seen in it; RSS far above live is memory the
allocator keeps without the program using it (fragmentation, buffers kept for reuse). Short-lived peaks
between two samples are not seen; ``ru_maxrss`` (the process peak) is printed too.

    .venv/bin/python benchmarks/memory_phases.py [--config la-paper] [--variant ssnet] [--runtime tuned]
        [--mmap-threshold-mb 128] [--repeats 1] [--interval-ms 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import (CONFIGS, RUNTIMES, TUNED_MALLOC_MB, VARIANTS, setup_variant, timed_steps,  # noqa: E402
                       variant_execution)


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (all fields size_t)."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def glibc_mallinfo2():
    """``mallinfo2`` of the C library; SystemExit where there is none (not glibc, or glibc < 2.33)."""
    from ssnet.allocator import c_library

    libc = c_library()
    if not hasattr(libc, "mallinfo2"):
        raise SystemExit("memory_phases.py needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2


class PhaseSampler:
    """Samples (RSS, live, heap, free) in GB into the innermost phase of ``stack``; keeps the maxima."""

    def __init__(self, interval_s: float):
        self.mallinfo2 = glibc_mallinfo2()
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.interval_s = interval_s
        self.stack = ["setup"]
        self.peaks: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}
        self.running = True

    def sample(self) -> list[float]:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * self.page
        info = self.mallinfo2()
        return [value / 1e9 for value in (rss, info.uordblks + info.hblkhd, info.arena + info.hblkhd,
                                          info.fordblks)]

    def record(self) -> None:
        """One sample, booked to the innermost phase (its maxima)."""
        phase, values = self.stack[-1], self.sample()
        old = self.peaks.setdefault(phase, values)
        self.peaks[phase] = [max(a, b) for a, b in zip(old, values)]

    def run(self) -> None:
        while self.running:
            self.record()
            time.sleep(self.interval_s)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Book samples taken inside the block to ``name #k`` (k: the how-many-th ``name`` phase)."""
        k = self.counts.get(name, 0)
        self.counts[name] = k + 1
        self.stack.append(f"{name} #{k}")
        try:
            yield
        finally:
            self.stack.pop()

    def wrap(self, name: str, function):
        @functools.wraps(function)
        def tracked(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)
        return tracked


def instrument(sampler: PhaseSampler, method) -> None:
    """Book the method's forward, separation, VAT and backward calls to phases (patches, this process)."""
    import ssnet.methods.ssnet as ssnet_method
    from ssnet.methods.base import StepContext

    StepContext.backward = sampler.wrap("backward", StepContext.backward)
    ssnet_method.vat_loss = sampler.wrap("vat", ssnet_method.vat_loss)
    if isinstance(method, ssnet_method.SSNet):
        method.separation_losses = sampler.wrap("separation", method.separation_losses)
    method.network.forward = sampler.wrap("network forward", method.network.forward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="la-paper", choices=sorted(CONFIGS))
    parser.add_argument("--variant", default="ssnet", choices=list(VARIANTS))
    parser.add_argument("--runtime", default="tuned", choices=sorted(RUNTIMES))
    parser.add_argument("--mmap-threshold-mb", type=int,
                        help=f"glibc mmap threshold instead of the runtime's (tuned: {TUNED_MALLOC_MB})")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sampler = PhaseSampler(args.interval_ms / 1000)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    _, method, batch = setup_variant(args.config, args.variant, args.threads, args.runtime)
    if args.mmap_threshold_mb is not None:
        from ssnet.allocator import configure_malloc
        configure_malloc(args.mmap_threshold_mb, None)
    with variant_execution(args.variant):
        with sampler.phase("warm-up iteration"):
            timed_steps(method, batch, 0, 1, 6000, 15000)
        instrument(sampler, method)
        sampler.counts.clear()
        with sampler.phase("measured iterations"):
            steps, _ = timed_steps(method, batch, 0, args.repeats, 6000, 15000)
            sampler.running = False
            thread.join()

    threshold = "the runtime's" if args.mmap_threshold_mb is None else f"{args.mmap_threshold_mb} MiB"
    print(f"{args.config}, {args.variant}, runtime {args.runtime}, mmap threshold {threshold}, "
          f"{args.threads} threads; iterations "
          + ", ".join(f"{step['total']:.1f} s" for step in steps)
          + f"; ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9:.2f} GB\n")
    print("| phase | peak RSS GB | peak live GB | heap GB | free in heap GB |\n|---|---:|---:|---:|---:|")
    for phase, (rss, live, heap, free) in sampler.peaks.items():
        print(f"| {phase} | {rss:.2f} | {live:.2f} | {heap:.2f} | {free:.2f} |")


if __name__ == "__main__":
    main()
