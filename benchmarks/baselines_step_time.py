"""Benchmark: time and peak memory of one training iteration of the comparison methods on CPU.

Companion of ``benchmarks/step_time.py`` (SS-Net's step benchmark, whose configurations and runtime
options it reuses): the same iteration - ``training_step``, backward, SGD step and the method's
``after_optimizer_step`` (UA-MT's EMA update, SASSNet's discriminator step) - for UA-MT, SASSNet, DTC,
URPC and MC-Net, with ``ssnet`` and ``supervised`` (labelled-only batch) as in-run references.
LA: VNet, 2 labelled + 2 unlabelled patches; ACDC: UNet, 12 + 12 slices; reduced sizes (``*-small``:
64x64x48, 128x128) and paper sizes (``*-paper``: 112x112x80, 256x256). Each (configuration, method)
runs in a fresh subprocess, so ``ru_maxrss`` is that configuration's own peak.

    .venv/bin/python benchmarks/baselines_step_time.py [--configs la-small acdc-small]
        [--methods uamt sassnet dtc urpc mcnet] [--threads 2] [--warmup 1] [--repeats 3] [--json out.json]
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
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from step_time import CONFIGS, RUNTIMES, TUNED_MALLOC_ENV  # noqa: E402  (SS-Net's benchmark settings)

METHODS = ["uamt", "sassnet", "dtc", "urpc", "mcnet", "ssnet", "supervised"]
# Per-dataset method params (the protocol's ACDC values; LA uses the dataclass defaults).
PARAMS = {
    "LA": {},
    "ACDC": {
        "uamt": {"consistency": 0.1, "consistency_rampup": 200.0},
        "sassnet": {"consistency": 0.01, "consistency_rampup": 200.0},
        "dtc": {"consistency": 0.1, "consistency_rampup": 200.0},
        "urpc": {"consistency": 0.1, "consistency_rampup": 200.0},
        "mcnet": {"consistency": 0.1, "consistency_rampup": 200.0, "dice_weight": 1.0},
    },
}


def worker(config_name: str, method_name: str, memory_format: str, threads: int, warmup: int, repeats: int) -> dict:
    import torch

    from ssnet.methods import get_method_class
    from ssnet.methods.base import Batch, DatasetSpec, StepContext

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = CONFIGS[config_name]
    spec = DatasetSpec(cfg["dataset"], cfg["dim"], cfg["n_classes"])
    cls = get_method_class(method_name)
    if method_name == "ssnet":
        params = dict(cfg["params"])
    else:
        params = dict(PARAMS[cfg["dataset"]].get(method_name, {}))
    method = cls(cls.Params(**params), spec, cfg["network"])
    if method_name == "supervised":
        n_labelled, n_unlabelled = cfg["labelled_only"], 0
    else:
        n_labelled, n_unlabelled = cfg["labelled"], cfg["unlabelled"]

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

    step_seconds = []
    for iteration in range(warmup + repeats):
        ctx = StepContext(iteration + 3000, 6000)
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        out = method.training_step(batch, ctx)
        out.loss.backward()
        optimiser.step()
        method.after_optimizer_step(ctx)
        elapsed = time.perf_counter() - start
        if iteration >= warmup:
            step_seconds.append(elapsed)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_params = sum(q.numel() for q in method.parameters())
    return {"config": config_name, "method": method_name, "memory_format": memory_format,
            "malloc": "tuned" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "default",
            "threads": threads, "batch": n_labelled + n_unlabelled, "shape": list(cfg["shape"]),
            "parameters": n_params, "median_s": statistics.median(step_seconds), "steps_s": step_seconds,
            "peak_gb": peak_kib * 1024 / 1e9, "last_logs": out.logs}


def run_in_subprocess(config: str, method: str, runtime: str, args) -> dict:
    memory_format, malloc = RUNTIMES[runtime]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for key in TUNED_MALLOC_ENV:
        env.pop(key, None)
    if malloc == "tuned":
        env.update(TUNED_MALLOC_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", config, method, memory_format,
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {config}/{method}/{runtime} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["runtime"] = runtime
    return result


def format_table(results: list[dict]) -> str:
    lines = ["| config | method | runtime | batch | parameters | median s/iter | steps (s) | peak GB |",
             "|---|---|---|---|---:|---:|---|---:|"]
    for r in results:
        steps = ", ".join(f"{s:.2f}" for s in r["steps_s"])
        lines.append(f"| {r['config']} | {r['method']} | {r['runtime']} | {r['batch']} | {r['parameters']:,} | "
                     f"{r['median_s']:.2f} | {steps} | {r['peak_gb']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["la-small", "acdc-small"], choices=sorted(CONFIGS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--runtimes", nargs="+", default=["default"], choices=sorted(RUNTIMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("CONFIG", "METHOD", "MEMORY_FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.warmup, args.repeats)))
        return
    results = []
    for config in args.configs:
        for runtime in args.runtimes:
            for method in args.methods:
                results.append(run_in_subprocess(config, method, runtime, args))
                r = results[-1]
                print(f"{config} {method} {runtime}: {r['median_s']:.2f} s/iter (steps "
                      f"{['%.2f' % s for s in r['steps_s']]}), peak {r['peak_gb']:.2f} GB", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    print(format_table(results))


if __name__ == "__main__":
    main()
