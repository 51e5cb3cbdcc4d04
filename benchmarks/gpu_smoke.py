"""GPU smoke test: a few SS-Net training iterations on CUDA through the real engine; prints it/s and memory.

For a machine with a GPU (one short run, about a minute): generates a small synthetic dataset, preprocesses
it, and trains the ``ssnet`` method with ``ssnet.engine.trainer.Trainer`` exactly as the pipeline's train
job does (device, AMP and cudnn.benchmark switches from the config, DataLoader workers, checkpoints off).

    .venv/bin/python benchmarks/gpu_smoke.py                        # LA, reduced patch, 5 warm-up + 20 timed
    .venv/bin/python benchmarks/gpu_smoke.py --dataset ACDC --size paper --amp --cudnn-benchmark
    .venv/bin/python benchmarks/gpu_smoke.py --json out.json

Without a CUDA device it stops with exit code 2 and says so (``--device cpu`` runs the same code on the
CPU, only to check the script itself).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# SS-Net hyper-parameters per dataset (the reference scripts; LA = the method's defaults)
SSNET_PARAMS = {"LA": {}, "ACDC": {"consistency": 0.1, "consistency_rampup": 200.0, "vat_eps": 6.0,
                                   "rampup_iteration_offset": 0}}
SIZES = {  # synthetic data, preprocessing and patch per (dataset, size)
    ("LA", "small"): ({"n_cases": 8, "size_xy": [80, 80], "n_slices": 56}, {"min_extent": 64},
                      {"patch_size": [64, 64, 48]}, {"n_filters": 16}),
    ("LA", "paper"): ({"n_cases": 8, "size_xy": [128, 128], "n_slices": 88}, {"min_extent": 112},
                      {"patch_size": [112, 112, 80]}, {"n_filters": 16}),
    ("ACDC", "small"): ({"n_patients": 8, "n_slices": [4, 6], "size_hw": [128, 128]}, {},
                        {"patch_size": [128, 128]}, {}),
    ("ACDC", "paper"): ({"n_patients": 8, "n_slices": [4, 6], "size_hw": [256, 256]}, {},
                        {"patch_size": [256, 256]}, {}),
}
LABELLED = {"LA": "2", "ACDC": "1"}


def run_config(args) -> dict:
    from ssnet.config import load_config, merge, run_config as resolve

    config = load_config([ROOT / "config.yaml"])
    config["methods"].setdefault("ssnet", {"type": "ssnet", "label": {"LA": "SS-Net", "ACDC": "SS-Net"},
                                           "params": SSNET_PARAMS})
    _, _, training, network = SIZES[(args.dataset, args.size)]
    config["datasets"][args.dataset] = merge(config["datasets"][args.dataset], {
        "network": network,
        "training": {**training, "iterations": args.warmup + args.iterations, "checkpoint_every": 10**9,
                     "log_every": 10**9, "num_workers": args.workers},
        "selection": {"mode": "last"},
    })
    config.update(device=args.device, amp=args.amp, cudnn_benchmark=args.cudnn_benchmark)
    if args.nondeterministic:
        config["deterministic"] = False
    return resolve(config, args.dataset, "ssnet", LABELLED[args.dataset])


def smoke(args) -> dict:
    import torch

    from ssnet.data.preprocess import preprocess_dataset
    from ssnet.data.synthetic import make_synthetic
    from ssnet.engine.trainer import Trainer

    synthetic, preprocessing, _, _ = SIZES[(args.dataset, args.size)]
    cfg = run_config(args)
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # per-case preprocessing lines
            make_synthetic(args.dataset, tmp / "raw", tmp / "splits", synthetic, seed=0)
            preprocess_dataset(args.dataset, tmp / "raw", tmp / "splits", tmp / "pre", seed=0,
                               params=preprocessing)
        data_seconds = time.perf_counter() - started

        trainer = Trainer(cfg, 1, tmp / "pre", tmp / "ckpt", threads=args.threads, progress=lambda line: None)
        cuda = trainer.device.type == "cuda"
        stamps: list[float] = []

        def tick(done: int) -> None:
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            if done == args.warmup and cuda:
                torch.cuda.reset_peak_memory_stats()

        trainer.fit(on_iteration_end=tick)
    steps = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])] if args.warmup else \
        [b - a for a, b in zip(stamps, stamps[1:])]
    losses = [row["loss"] for row in trainer.log_rows]
    result = {
        "dataset": args.dataset, "size": args.size, "patch": cfg["training"]["patch_size"],
        "batch": cfg["training"]["batch_labelled"] + cfg["training"]["batch_unlabelled"],
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "cuda": torch.version.cuda, "amp": trainer.amp, "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": cfg["deterministic"], "timed_iterations": len(steps),
        "iterations_per_s": 1 / statistics.mean(steps), "median_s_per_iteration": statistics.median(steps),
        "peak_gpu_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "peak_host_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "losses_finite": all(math.isfinite(loss) for loss in losses), "last_loss": losses[-1],
        "data_seconds": data_seconds,
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["LA", "ACDC"], default="LA")
    parser.add_argument("--size", choices=["small", "paper"], default="small",
                        help="small: LA 64x64x48 / ACDC 128x128 patches; paper: 112x112x80 / 256x256")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (cuDNN autotuning, caches)")
    parser.add_argument("--amp", action="store_true", help="config amp: true (CUDA automatic mixed precision)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="config cudnn_benchmark: true")
    parser.add_argument("--nondeterministic", action="store_true", help="config deterministic: false")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (training.num_workers)")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu only checks the script itself; the numbers are meant for cuda")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device visible to torch "
              f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); this smoke test needs a GPU. "
              "Run it on a GPU node (e.g. srun --gpus=1 ...), or pass --device cpu to check the script only.",
              file=sys.stderr)
        return 2
    result = smoke(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    memory = (f"peak GPU memory {result['peak_gpu_allocated_gib']:.2f} GiB allocated / "
              f"{result['peak_gpu_reserved_gib']:.2f} GiB reserved" if result["peak_gpu_allocated_gib"] is not None
              else "no GPU")
    print(f"SS-Net {result['dataset']} ({result['size']}, patch {result['patch']}, batch {result['batch']}) on "
          f"{result['device']} | torch {result['torch']} CUDA {result['cuda']} | amp {result['amp']} "
          f"cudnn.benchmark {result['cudnn_benchmark']} deterministic {result['deterministic']}")
    print(f"{result['iterations_per_s']:.2f} it/s (median {result['median_s_per_iteration'] * 1000:.0f} ms/it over "
          f"{result['timed_iterations']} iterations) | {memory} | host RSS {result['peak_host_rss_gib']:.2f} GiB | "
          f"losses finite: {result['losses_finite']}")
    return 0 if result["losses_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
