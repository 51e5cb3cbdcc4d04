"""Benchmark: time and peak memory of one training iteration of the comparison methods on CPU.

Companion of ``benchmarks/step_time.py`` (SS-Net's step benchmark, whose configurations and runtime
options it reuses): the same iteration - ``training_step``, backward, SGD step and the method's
``after_optimizer_step`` (UA-MT's EMA update, SASSNet's discriminator step) - for UA-MT, SASSNet, DTC,
URPC and MC-Net, with ``ssnet`` and ``supervised`` (labelled-only batch) as in-run references.
LA: VNet, 2 labelled + 2 unlabelled patches; ACDC: UNet, 12 + 12 slices; reduced sizes (``*-small``:
64x64x48, 128x128) and paper sizes (``*-paper``: 112x112x80, 256x256). Each (configuration, method)
runs in a fresh subprocess, so its peak RSS (``VmHWM``, ``step_time.peak_gb``) is that configuration's own.

    .venv/bin/python benchmarks/baselines_step_time.py [--configs la-small acdc-small]
        [--methods uamt sassnet dtc urpc mcnet] [--threads 2] [--warmup 1] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from step_time import (  # noqa: E402  (SS-Net's benchmark settings and iteration loop)
    CONFIGS, RUNTIMES, config_run, peak_gb, run_in_subprocess, setup_step, timed_steps)

METHODS = ["uamt", "sassnet", "dtc", "urpc", "mcnet", "ssnet", "supervised"]  # with the params of config.yaml


def worker(config_name: str, method_name: str, runtime: str, threads: int, warmup: int, repeats: int) -> dict:
    params = config_run(method_name, CONFIGS[config_name]["dataset"])["params"]  # as config.yaml runs it
    cfg, method, batch = setup_step(config_name, method_name, params, threads, runtime)
    steps, out = timed_steps(method, batch, warmup, repeats, 3000, 6000)
    wall = [step["total"] for step in steps]
    return {"config": config_name, "method": method_name, "runtime": runtime, "threads": threads,
            "batch": batch.image.shape[0], "shape": list(cfg["shape"]),
            "parameters": sum(q.numel() for q in method.parameters()), "median_s": statistics.median(wall),
            "steps_s": wall, "peak_gb": peak_gb(), "last_logs": out.logs}


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
    parser.add_argument("--worker", nargs=3, metavar=("CONFIG", "METHOD", "RUNTIME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.warmup, args.repeats)))
        return
    results = []
    for config in args.configs:
        for runtime in args.runtimes:
            for method in args.methods:
                results.append(run_in_subprocess(Path(__file__).resolve(), [config, method], runtime, args))
                r = results[-1]
                print(f"{config} {method} {runtime}: {r['median_s']:.2f} s/iter (steps "
                      f"{['%.2f' % s for s in r['steps_s']]}), peak {r['peak_gb']:.2f} GB", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    print(format_table(results))


if __name__ == "__main__":
    main()
