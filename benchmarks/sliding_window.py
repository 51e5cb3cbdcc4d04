"""Benchmark: batched sliding-window inference vs the one-window-at-a-time loop on the LA test geometry.

Volume 175 x 132 x 88 (a real LA test case's size), patch 112 x 112 x 80, strides 18 / 4 -> 45 windows,
a randomly initialised VNet (n_filters 16) in eval mode whose output convolution is calibrated on the centre
window (``step_time.calibrate_output``: sharp logits, about half the voxels foreground, so that the prediction
check compares a real boundary), 2 torch threads by default. Every variant runs in its own subprocess so that
the peak resident memory (``VmHWM``, ``step_time.peak_gb``) is per variant. Predictions of every batched run
are compared with the loop's (exact, except voxels whose probability is within 1e-4 of 0.5).

    .venv/bin/python benchmarks/sliding_window.py [--batch-sizes 4 8] [--fused-batch-sizes 4] [--channels-last]
                                                  [--threads 2] [--device cpu] [--malloc default|tuned|both]

``fused<N>`` variants predict with :func:`ssnet.networks.fusion.fused_for_inference` (convolution, BatchNorm
and ReLU as one oneDNN convolution: what evaluation runs with ``inference.fuse_batchnorm``), batch N;
``--channels-last`` puts the network (and so the windows) in channels-last layout, as ``channels_last: true``.

``--malloc tuned`` runs the workers with glibc's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
raised, so that freed activation buffers stay in the heap instead of being unmapped and page-faulted
back in on every forward (on CPU this roughly halves the time per window).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from step_time import (calibrate_output, centre_window, peak_gb,  # noqa: E402  (benchmarks/ is not a package)
                       proc_status_kib)

SHAPE = (175, 132, 88)
PATCH = (112, 112, 80)
STRIDE_XY, STRIDE_Z = 18, 4
NEAR_HALF = 1e-4
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}


def _rss_mib() -> float:
    kib = proc_status_kib("VmRSS")
    return float("nan") if kib is None else kib / 1024


def benchmark_volume() -> np.ndarray:
    """The seeded random input volume (SHAPE, float32)."""
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def benchmark_network():
    """The VNet (n_filters 16, eval mode) of torch seed 0."""
    import torch

    from ssnet.networks import VNet

    torch.manual_seed(0)
    return VNet(in_channels=1, n_classes=2, n_filters=16, dropout=True).eval()


def save_calibrated_weights(path: str) -> None:
    """:func:`benchmark_network` with its output convolution calibrated on the volume's centre window
    (``calibrate_output``), saved to ``path``: in the driver, so that every variant gets the same weights and
    no worker's peak memory includes the calibration's forward."""
    import torch

    model = benchmark_network()
    calibrate_output(model, model.out_conv, centre_window(benchmark_volume(), PATCH)[None, None])
    torch.save(model.state_dict(), path)


def worker(variant: str, threads: int, device: str, out: str, channels_last: bool, weights: str) -> None:
    import torch

    from ssnet.evaluation.inference import sliding_window_predict, sliding_window_predict_loop, window_grid
    from ssnet.networks.fusion import fused_for_inference

    torch.set_num_threads(threads)
    model = benchmark_network()
    model.load_state_dict(torch.load(weights))
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    image = benchmark_volume()
    if variant.startswith("fused"):
        model = fused_for_inference(model)
    n_windows = len(window_grid(SHAPE, PATCH, STRIDE_XY, STRIDE_Z))
    with torch.inference_mode():  # warm-up: allocator and thread pool, not counted
        model(torch.zeros((1, 1, 16, 16, 16), device=device))
    rss_before = _rss_mib()
    start = time.perf_counter()
    if variant == "loop":
        pred, prob = sliding_window_predict_loop(model, image, PATCH, STRIDE_XY, STRIDE_Z, 2, device=device)
    else:
        bs = int(variant.removeprefix("fused").removeprefix("batch"))
        pred, prob = sliding_window_predict(model, image, PATCH, STRIDE_XY, STRIDE_Z, 2, batch_size=bs, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = peak_gb() * 1e9 / 2**20
    np.savez(out, pred=pred, prob=prob)
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_rss_mib": peak,
                      "rss_before_mib": rss_before, "windows": n_windows, "foreground": int(pred.sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--fused-batch-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--malloc", choices=["default", "tuned", "both"], default="both")
    parser.add_argument("--no-loop", action="store_true", help="skip the one-window loop (no equality check)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.device, args.out, args.channels_last, args.weights)
        return

    variants = ([] if args.no_loop else ["loop"]) + [f"batch{b}" for b in args.batch_sizes]
    variants += [f"fused{b}" for b in args.fused_batch_sizes]
    print(f"volume {SHAPE}, patch {PATCH}, strides {STRIDE_XY}/{STRIDE_Z}, VNet n_filters=16 (random init, "
          f"output conv calibrated, eval), "
          f"threads={args.threads}, device={args.device}, channels_last={args.channels_last}")
    settings = ["default", "tuned"] if args.malloc == "both" else [args.malloc]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.pt")
        save_calibrated_weights(weights)
        for setting in settings:
            env = {**os.environ, **(TUNED_MALLOC_ENV if setting == "tuned" else {})}
            if setting == "default":
                for k in TUNED_MALLOC_ENV:
                    env.pop(k, None)
            print(f"-- allocator: {setting}" + (f" {TUNED_MALLOC_ENV}" if setting == "tuned" else ""), flush=True)
            failed |= _run_variants(variants, args, env, weights)
    if failed:
        sys.exit(1)


def _run_variants(variants: list[str], args, env: dict, weights: str) -> bool:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            out = os.path.join(tmp, f"{v}.npz")
            cmd = [sys.executable, __file__, "--worker", v, "--out", out, "--threads", str(args.threads),
                   "--device", args.device, "--weights", weights] + (["--channels-last"] if args.channels_last else [])
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["arrays"] = dict(np.load(out))
            results[v] = res
            print(f"{v:>8}: {res['seconds']:7.2f} s  peak RSS {res['peak_rss_mib']:8.0f} MiB "
                  f"(before inference {res['rss_before_mib']:.0f} MiB)  windows {res['windows']}  "
                  f"foreground voxels {res['foreground']}", flush=True)
    failed = False
    if "loop" in results:
        ref = results["loop"]["arrays"]
        for v in variants[1:]:
            a = results[v]["arrays"]
            ok = ~(np.abs(ref["prob"] - 0.5) < NEAR_HALF)
            same = bool(np.array_equal(a["pred"][ok], ref["pred"][ok]))
            n_diff = int((a["pred"] != ref["pred"]).sum())
            max_dp = float(np.abs(a["prob"] - ref["prob"]).max())
            speedup = results["loop"]["seconds"] / results[v]["seconds"]
            print(f"{v} vs loop: predictions equal={same} (voxels differing: {n_diff}), "
                  f"max |prob diff|={max_dp:.2e}, speed-up x{speedup:.2f}", flush=True)
            failed |= not same
    return failed

if __name__ == "__main__":
    main()
