"""Benchmark: time and peak memory of one training iteration (forward + backward + SGD step) on CPU.

For LA (VNet, 2 labelled + 2 unlabelled patches; labelled-only batch 4) and ACDC (UNet, 12 + 12 slices;
labelled-only batch 24), at reduced sizes (64x64x48, 128x128) and paper sizes (112x112x80, 256x256).
Variants:

- ``ssnet``: the SS-Net method as implemented here;
- ``ssnet-refexec``: the same maths executed the way the reference scripts do it (a second clean
  forward for the VAT target, the power-iteration backward also filling parameter gradients, explicit
  (pixels x prototypes) distance matrices in the separation loss): the same-conditions baseline;
- ``ssnet-lowmem``: ``ssnet`` with ``low_memory`` (the training forward and the heads are recomputed
  during backward instead of being kept: about one network graph less, one forward more);
- ``labelled-only``: the ``supervised`` method on the labelled-only batch.

Each (configuration, variant, runtime) runs in a fresh subprocess so that ``ru_maxrss`` is its own
peak. Runtime options: ``--memory-format channels_last`` converts network and input to channels-last
(a layout change only: same maths, different float summation order), ``--malloc tuned`` raises glibc's
mmap/trim thresholds so freed activation buffers are reused instead of unmapped and page-faulted back.
The share of time in the smoothness passes is the wall time of the VAT call (clean target, power
iteration forward + backward, final forward) over the step; the final pass's backward runs inside the
joint backward and is not included.

    .venv/bin/python benchmarks/step_time.py [--configs la-small acdc-small] [--variants ssnet labelled-only]
        [--runtimes default tuned] [--threads 2] [--warmup 1] [--repeats 3] [--rounds 1] [--json out.json]

Runtimes: ``default`` = contiguous + default malloc; ``tuned`` = channels_last + tuned malloc.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}
RUNTIMES = {"default": ("contiguous", "default"), "tuned": ("channels_last", "tuned")}
CONFIGS = {
    "la-small": {"dataset": "LA", "dim": 3, "n_classes": 2, "shape": (64, 64, 48), "labelled": 2, "unlabelled": 2,
                 "labelled_only": 4, "network": {"arch": "vnet", "n_filters": 16, "dropout": True}, "params": {}},
    "la-paper": {"dataset": "LA", "dim": 3, "n_classes": 2, "shape": (112, 112, 80), "labelled": 2, "unlabelled": 2,
                 "labelled_only": 4, "network": {"arch": "vnet", "n_filters": 16, "dropout": True}, "params": {}},
    "acdc-small": {"dataset": "ACDC", "dim": 2, "n_classes": 4, "shape": (128, 128), "labelled": 12,
                   "unlabelled": 12, "labelled_only": 24, "network": {"arch": "unet"},
                   "params": {"consistency": 0.1, "consistency_rampup": 200.0, "vat_eps": 6.0,
                              "rampup_iteration_offset": 0}},
    "acdc-paper": {"dataset": "ACDC", "dim": 2, "n_classes": 4, "shape": (256, 256), "labelled": 12,
                   "unlabelled": 12, "labelled_only": 24, "network": {"arch": "unet"},
                   "params": {"consistency": 0.1, "consistency_rampup": 200.0, "vat_eps": 6.0,
                              "rampup_iteration_offset": 0}},
}
# The reference implementation's SS-Net step on this machine, as given in the issue: (seconds, peak GB).
REFERENCE_SSNET = {"la-small": (6.5, 3.2), "la-paper": (56.0, 12.8),
                   "acdc-small": (3.7, 2.9), "acdc-paper": (26.0, 9.1)}


# --------------------------------------------------------------------------- reference execution
def _vat_with_parameter_backward(network, x, *, xi, eps, power_iterations, distance, target=None,
                                 uniform_draw=None):
    """VAT as the reference executes it: the power-iteration backward also computes (then discards)
    parameter gradients; the clean target is always a separate forward."""
    import torch

    from ssnet.smoothness import (DISTANCES, VATResult, _logits, frozen_running_stats,
                                  l2_normalize_per_sample, random_unit_direction)

    distance_fn = DISTANCES[distance]
    with torch.no_grad():
        target = torch.softmax(_logits(network, x), dim=1)
    d_unit = random_unit_direction(x.shape, x.device, uniform_draw).to(x.dtype)
    d = d_unit
    with frozen_running_stats(network):
        for _ in range(power_iterations):
            d = d.detach().requires_grad_(True)
            distance_fn(torch.softmax(_logits(network, x + xi * d), dim=1), target).backward()
            d = l2_normalize_per_sample(d.grad)
            network.zero_grad()
        loss = distance_fn(torch.softmax(_logits(network, x + eps * d), dim=1), target)
    return VATResult(loss, d_unit, d.detach())


def _separation_with_distance_matrix(heads, features, labels, memory, weight_prototypes=False, low_memory=False):
    """The separation loss through the explicit (features x prototypes) weighted distance matrix."""
    import torch.nn.functional as F

    from ssnet.separation import reference_prototype_weights, mean_one_weights

    prototype_weights = mean_one_weights if weight_prototypes else reference_prototype_weights
    loss = features.new_zeros(())
    for c, prototypes in enumerate(memory.prototypes):
        features_c = features[labels == c]
        if prototypes is None or prototypes.shape[0] < 2 or features_c.shape[0] < 2:
            continue
        m = F.normalize(prototypes, dim=1)
        distances = 1 - F.normalize(features_c, dim=1) @ m.T
        w = mean_one_weights(heads.selector(c), features_c.detach())
        v = prototype_weights(heads.memory_selector(c), m)
        loss = loss + (distances * w[:, None].repeat(1, m.shape[0]) * v[None, :].repeat(w.shape[0], 1)).mean()
    return loss / memory.n_classes


# ------------------------------------------------------------------------------------------ worker
def worker(config_name: str, variant: str, memory_format: str, threads: int, warmup: int, repeats: int) -> dict:
    import torch

    import ssnet.methods.ssnet as ssnet_method
    from ssnet.methods import get_method_class
    from ssnet.methods.base import Batch, DatasetSpec, StepContext

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = CONFIGS[config_name]
    spec = DatasetSpec(cfg["dataset"], cfg["dim"], cfg["n_classes"])
    if variant == "labelled-only":
        cls = get_method_class("supervised")
        method = cls(cls.Params(), spec, cfg["network"])
        n_labelled, n_unlabelled = cfg["labelled_only"], 0
    else:
        cls = get_method_class("ssnet")
        params = dict(cfg["params"])
        if variant == "ssnet-lowmem":
            params["low_memory"] = True
        if variant == "ssnet-refexec":
            params["vat_target"] = "separate"
            ssnet_method.vat_loss = _vat_with_parameter_backward
            ssnet_method.separation_loss = _separation_with_distance_matrix
        method = cls(cls.Params(**params), spec, cfg["network"])
        n_labelled, n_unlabelled = cfg["labelled"], cfg["unlabelled"]

    vat_seconds = []
    if variant.startswith("ssnet"):
        inner = ssnet_method.vat_loss

        def timed_vat(*args, **kwargs):
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            vat_seconds.append(time.perf_counter() - start)
            return result

        ssnet_method.vat_loss = timed_vat

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(n_labelled + n_unlabelled, 1, *cfg["shape"], generator=generator)
    smooth = torch.nn.functional.avg_pool3d if cfg["dim"] == 3 else torch.nn.functional.avg_pool2d
    blurred = smooth(image[:n_labelled], 5, stride=1, padding=2)[:, 0]
    label = torch.bucketize(blurred, torch.linspace(-0.3, 0.3, cfg["n_classes"] + 1)[1:-1])  # blob-like classes
    if memory_format == "channels_last":
        fmt = torch.channels_last_3d if cfg["dim"] == 3 else torch.channels_last
        method = method.to(memory_format=fmt)
        image = image.contiguous(memory_format=fmt)
    method.train()
    optimiser = torch.optim.SGD(method.optimised_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    batch = Batch(image, label)

    step_seconds, cpu_seconds = [], []
    for iteration in range(warmup + repeats):
        vat_seconds.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        optimiser.zero_grad(set_to_none=True)
        out = method.training_step(batch, StepContext(iteration + 6000, 15000))
        out.loss.backward()
        optimiser.step()
        elapsed = time.perf_counter() - start
        if iteration >= warmup:
            step_seconds.append(elapsed)
            cpu_seconds.append(time.process_time() - cpu_start)
            smooth_share = sum(vat_seconds) / elapsed
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load = os.getloadavg()[0]
    return {"config": config_name, "variant": variant, "memory_format": memory_format,
            "malloc": "tuned" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "default",
            "threads": threads, "batch": n_labelled + n_unlabelled, "shape": list(cfg["shape"]),
            "median_s": statistics.median(step_seconds), "steps_s": step_seconds,
            "median_cpu_s": statistics.median(cpu_seconds),
            "smoothness_share": smooth_share if variant.startswith("ssnet") else None,
            "peak_gb": peak_kib * 1024 / 1e9, "load_1min": load, "last_logs": out.logs}


def run_in_subprocess(config: str, variant: str, runtime: str, args) -> dict:
    memory_format, malloc = RUNTIMES[runtime]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for key in TUNED_MALLOC_ENV:
        env.pop(key, None)
    if malloc == "tuned":
        env.update(TUNED_MALLOC_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", config, variant, memory_format,
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {config}/{variant}/{runtime} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["runtime"] = runtime
    return result


def format_table(results: list[dict]) -> str:
    lines = ["| config | variant | runtime | batch | median s/iter | smoothness share | peak GB | max load "
             "| reference s / GB | speed-up vs reference |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref_s, ref_gb = REFERENCE_SSNET[r["config"]]
        ssnet = r["variant"].startswith("ssnet")
        share = f"{r['smoothness_share']:.0%}" if r["smoothness_share"] is not None else "-"
        reference = f"{ref_s:g} / {ref_gb:g}" if ssnet else "-"
        speed_up = f"{ref_s / r['median_s']:.2f}x" if ssnet else "-"
        lines.append(f"| {r['config']} | {r['variant']} | {r['runtime']} | {r['batch']} | {r['median_s']:.2f} | "
                     f"{share} | {r['peak_gb']:.2f} | {r['load_1min']:.1f} | {reference} | {speed_up} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["la-small", "acdc-small"], choices=sorted(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=["ssnet", "ssnet-lowmem", "ssnet-refexec", "labelled-only"],
                        choices=["ssnet", "ssnet-lowmem", "ssnet-refexec", "labelled-only"])
    parser.add_argument("--runtimes", nargs="+", default=["default", "tuned"], choices=sorted(RUNTIMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the variant sequence (pooled steps)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("CONFIG", "VARIANT", "MEMORY_FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.warmup, args.repeats)))
        return
    results = []
    for config in args.configs:
        for runtime in args.runtimes:
            pooled: dict[str, dict] = {}
            for _ in range(args.rounds):  # variants interleaved, so that load changes hit them alike
                for variant in args.variants:
                    r = run_in_subprocess(config, variant, runtime, args)
                    print(f"{config} {variant} {runtime}: {r['median_s']:.2f} s/iter (steps "
                          f"{['%.2f' % s for s in r['steps_s']]}), peak {r['peak_gb']:.2f} GB, "
                          f"load {r['load_1min']:.1f}", flush=True)
                    if variant in pooled:
                        p = pooled[variant]
                        p["steps_s"] += r["steps_s"]
                        p["peak_gb"] = max(p["peak_gb"], r["peak_gb"])
                        p["load_1min"] = max(p["load_1min"], r["load_1min"])
                    else:
                        pooled[variant] = r
            for r in pooled.values():
                r["median_s"] = statistics.median(r["steps_s"])
                results.append(r)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    print(format_table(results))


if __name__ == "__main__":
    main()
