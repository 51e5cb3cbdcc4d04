"""Benchmark: time and peak memory of one training iteration (forward + backward + SGD step) on CPU.

For LA (VNet, 2 labelled + 2 unlabelled patches; labelled-only batch 4) and ACDC (UNet, 12 + 12 slices;
labelled-only batch 24), at reduced sizes (64x64x48, 128x128) and paper sizes (112x112x80, 256x256).
Variants (``VARIANTS``: SS-Net parameters over those of ``config.yaml``):

- ``ssnet``: the SS-Net method as ``config.yaml`` runs it (staged backward; ``recompute: heads`` on LA: the
  per-pixel heads recomputed in backward, ``none`` on ACDC: every activation kept);
- ``ssnet-recompute-none`` / ``ssnet-recompute-heads`` / ``ssnet-recompute-all``: ``recompute`` none /
  heads / all (also the network's training forward recomputed: the least memory; the default from
  2026-11-29 to 2026-11-30);
- ``ssnet-joint``: one joint backward of the total loss, nothing recomputed (the reference's order);
- ``ssnet-refexec``: ``ssnet-joint`` executed the way the reference scripts execute it (a second clean
  forward for the VAT target, the power-iteration backward also filling parameter gradients, explicit
  (pixels x prototypes) distance matrices in the separation loss): the same-conditions baseline;
- ``labelled-only``: the ``supervised`` method on the labelled-only batch.

Each (configuration, variant, runtime) runs in a fresh subprocess so that its peak RSS (``VmHWM``,
:func:`peak_gb`) is its own. Runtimes (the engine's config switches ``channels_last`` and
``cpu_allocator``, applied the same way through :mod:`ssnet.runtime` and :mod:`ssnet.allocator`; under
``LD_PRELOAD`` jemalloc the malloc thresholds go unused): ``default`` = contiguous layout, glibc's malloc
defaults; ``channels-last``; ``malloc`` = mmap and trim thresholds at 2047 MiB (freed activation buffers
are reused instead of unmapped and page-faulted back); ``tuned`` = both. The smoothness share is the wall
time of the VAT call (power iteration forward + backward, final forward, and the clean target pass where
it is a separate forward; on the VNet with dropout that pass starts from the training forward's encoder
outputs and counts as forward) over the step; the final pass's backward is not included.

    .venv/bin/python benchmarks/step_time.py [--configs la-small acdc-small] [--variants ssnet labelled-only]
        [--runtimes default tuned] [--threads 2] [--warmup 1] [--repeats 3] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
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

RUNTIMES = {"default": ("contiguous", "default"), "tuned": ("channels_last", "tuned"),
            "channels-last": ("channels_last", "default"), "malloc": ("contiguous", "tuned")}
TUNED_MALLOC_MB = 2047  # cpu_allocator.mmap_threshold_mb and trim_threshold_mb of the tuned runtimes
# Geometry and network per configuration; the method's parameters come from config.yaml (config_run).
CONFIGS = {
    "la-small": {"dataset": "LA", "dim": 3, "n_classes": 2, "shape": (64, 64, 48), "labelled": 2, "unlabelled": 2,
                 "labelled_only": 4, "network": {"arch": "vnet", "n_filters": 16, "dropout": True}},
    "la-paper": {"dataset": "LA", "dim": 3, "n_classes": 2, "shape": (112, 112, 80), "labelled": 2, "unlabelled": 2,
                 "labelled_only": 4, "network": {"arch": "vnet", "n_filters": 16, "dropout": True}},
    "acdc-small": {"dataset": "ACDC", "dim": 2, "n_classes": 4, "shape": (128, 128), "labelled": 12,
                   "unlabelled": 12, "labelled_only": 24, "network": {"arch": "unet"}},
    "acdc-paper": {"dataset": "ACDC", "dim": 2, "n_classes": 4, "shape": (256, 256), "labelled": 12,
                   "unlabelled": 12, "labelled_only": 24, "network": {"arch": "unet"}},
}
VARIANTS = {
    "ssnet": {},
    "ssnet-recompute-none": {"recompute": "none"},
    "ssnet-recompute-heads": {"recompute": "heads"},
    "ssnet-recompute-all": {"recompute": "all"},
    "ssnet-joint": {"staged_backward": False, "recompute": "none"},
    "ssnet-refexec": {"staged_backward": False, "recompute": "none", "vat_target": "separate"},
    "labelled-only": None,
}


def config_run(method: str, dataset: str, overlays: tuple[Path, ...] | list[Path] = ()) -> dict:
    """The run config of ``method`` on ``dataset`` (its first labelled count) from ``config.yaml`` (+ ``overlays``):
    the parameters and execution settings the pipeline's jobs run with."""
    from ssnet.config import labelled_values, load_config, run_config

    config = load_config([ROOT / "config.yaml", *overlays])
    return run_config(config, dataset, method, labelled_values(config, dataset, method)[0])


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


def _separation_with_distance_matrix(heads, features, labels, memory, weight_prototypes=False, recompute=False):
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
def synthetic_batch(cfg: dict, n_labelled: int, n_unlabelled: int):
    """Random images (B, 1, *shape) and blob-like labels for the first ``n_labelled`` of them."""
    import torch

    from ssnet.methods.base import Batch

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(n_labelled + n_unlabelled, 1, *cfg["shape"], generator=generator)
    smooth = torch.nn.functional.avg_pool3d if cfg["dim"] == 3 else torch.nn.functional.avg_pool2d
    blurred = smooth(image[:n_labelled], 5, stride=1, padding=2)[:, 0]
    label = torch.bucketize(blurred, torch.linspace(-0.3, 0.3, cfg["n_classes"] + 1)[1:-1])
    return Batch(image, label)


def setup_step(config: str | dict, method_type: str, params: dict, threads: int, runtime: str,
               device: str = "cpu"):
    """(configuration dict, method, batch) for a worker, with the runtime's settings applied the way the
    engine applies them. ``supervised`` gets the labelled-only batch, other methods labelled + unlabelled.
    ``config``: a name in ``CONFIGS`` or a dict of the same form; method and batch are moved to ``device``."""
    import torch

    from ssnet.methods import get_method_class
    from ssnet.methods.base import DatasetSpec
    from ssnet.allocator import configure_malloc
    from ssnet.runtime import memory_format

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layout, malloc = RUNTIMES[runtime]
    if malloc == "tuned":
        configure_malloc(TUNED_MALLOC_MB, TUNED_MALLOC_MB)
    cfg = CONFIGS[config] if isinstance(config, str) else config
    cls = get_method_class(method_type)
    method = cls(cls.Params(**params), DatasetSpec(cfg["dataset"], cfg["dim"], cfg["n_classes"]), cfg["network"])
    n_labelled, n_unlabelled = ((cfg["labelled_only"], 0) if method_type == "supervised"
                                else (cfg["labelled"], cfg["unlabelled"]))
    fmt = memory_format(layout == "channels_last", cfg["dim"])
    batch = synthetic_batch(cfg, n_labelled, n_unlabelled)
    return cfg, method.to(device, memory_format=fmt), batch.to(torch.device(device), fmt)


def setup_variant(config: str | dict, variant: str, threads: int, runtime: str, device: str = "cpu"):
    """:func:`setup_step` for a name of ``VARIANTS``: SS-Net with the variant's parameters over those of
    ``config.yaml``, or ``supervised`` for ``labelled-only``. Run ``ssnet-refexec`` inside
    :func:`variant_execution`."""
    cfg = CONFIGS[config] if isinstance(config, str) else config
    method = "supervised" if VARIANTS[variant] is None else "ssnet"
    params = {**config_run(method, cfg["dataset"])["params"], **(VARIANTS[variant] or {})}
    return setup_step(cfg, method, params, threads, runtime, device)


@contextlib.contextmanager
def variant_execution(variant: str):
    """Within the block, the SS-Net method executes as ``variant`` does: for ``ssnet-refexec`` the
    reference scripts' VAT and separation-loss execution; the method's own functions are put back after."""
    import ssnet.methods.ssnet as ssnet_method

    saved = ssnet_method.vat_loss, ssnet_method.separation_loss
    if variant == "ssnet-refexec":
        ssnet_method.vat_loss = _vat_with_parameter_backward
        ssnet_method.separation_loss = _separation_with_distance_matrix
    try:
        yield
    finally:
        ssnet_method.vat_loss, ssnet_method.separation_loss = saved


def timed_steps(method, batch, warmup: int, repeats: int, iteration: int, max_iterations: int,
                on_step=lambda measured, step: None, amp: bool = False) -> tuple[list[dict], object]:
    """Time ``repeats`` SGD iterations after ``warmup``; returns (steps, the last StepOutput).

    Per measured iteration, wall seconds: ``total``, ``backward`` (each ``StepContext.backward`` call in
    order: the staged part first, the returned loss last), ``optimizer`` (SGD step and the method's
    ``after_optimizer_step``), and ``cpu`` (process CPU seconds); ``logs`` (the step's logged terms) and
    ``loss`` (the value back-propagated). ``on_step(measured, step)`` runs after every iteration and may
    add entries to ``step``. On CUDA the times are taken after ``torch.cuda.synchronize()``.
    ``amp``: as the engine's ``Trainer.step`` with ``amp: true`` (``training_step`` under autocast,
    losses scaled by a ``GradScaler``, whose scale after the step is ``amp_scale``); meant for CUDA (the
    engine ignores ``amp`` on the CPU, where autocast would be bfloat16).
    """
    import torch

    from ssnet.methods.base import StepContext

    device = batch.image.device
    scaler = torch.amp.GradScaler(device.type, enabled=amp) if amp else None
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    class TimedContext(StepContext):
        def backward(self, loss):
            start = time.perf_counter()
            super().backward(loss)
            self.backward_seconds.append(time.perf_counter() - start)

    method.train()
    optimiser = torch.optim.SGD(method.optimised_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    steps = []
    for i in range(warmup + repeats):
        ctx = TimedContext(iteration + i, max_iterations, scale=scaler.scale if amp else None)
        ctx.backward_seconds = []
        synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            out = method.training_step(batch, ctx)
        ctx.backward(out.loss)
        optimizer_start = time.perf_counter()
        if amp:
            scaler.step(optimiser)
            scaler.update()
        else:
            optimiser.step()
        method.after_optimizer_step(ctx)
        synchronize()
        end = time.perf_counter()
        step = {"total": end - start, "backward": ctx.backward_seconds, "optimizer": end - optimizer_start,
                "cpu": time.process_time() - cpu_start, "logs": dict(out.logs), "loss": ctx.backpropagated}
        if amp:
            step["amp_scale"] = scaler.get_scale()
        on_step(i >= warmup, step)
        if i >= warmup:
            steps.append(step)
    return steps, out


def phase_shares(step: dict) -> dict[str, float]:
    """Where one iteration's wall time went, as fractions of ``total``: the forward part of
    ``training_step`` (network, losses, heads; VAT excluded), the VAT passes, each backward, the SGD step."""
    backward = step["backward"]
    names = ["backward"] if len(backward) == 1 else ["backward_training", "backward_smoothness"]
    seconds = {"vat_passes": step.get("vat", 0.0), **dict(zip(names, backward)), "sgd": step["optimizer"]}
    seconds = {"forward": step["total"] - sum(seconds.values()), **seconds}
    return {name: value / step["total"] for name, value in seconds.items()}


def centre_window(image: np.ndarray, patch) -> "torch.Tensor":
    """The ``patch``-sized window at the centre of ``image`` (same dimensions), as a contiguous tensor."""
    import numpy as np
    import torch

    start = [(n - p) // 2 for n, p in zip(image.shape, patch)]
    window = image[tuple(slice(s, s + p) for s, p in zip(start, patch))]
    return torch.from_numpy(np.ascontiguousarray(window))


def pixel_dims(tensor) -> list[int]:
    """The batch and spatial dimensions of a (B, C, *S) tensor: all but the class dimension 1."""
    return [0, *range(2, tensor.dim())]


def class_contrast(logits):
    """``logits`` (B, C, *S) less their mean over the classes and less each class's mean over the pixels."""
    centred = logits - logits.mean(dim=1, keepdim=True)
    return centred - centred.mean(dim=pixel_dims(logits), keepdim=True)


def calibrate_output(model, out_conv, batch, spread: float = 2.0, rounds: int = 50) -> list[float]:
    """Rescale and shift ``out_conv``, the output convolution of ``model`` (eval mode; ``model(batch)[0]`` are
    the logits), so that the logits on ``batch`` look like a trained network's rather than a random init's,
    which predicts one class almost everywhere with nearly flat logits (an identical-label-map check would then
    be nearly vacuous, or all near-ties):

    - weight and bias times ``spread / std(contrast)``, the contrast being the logits less their mean over the
      classes and less each class's own mean over the pixels (a constant per class, which the bias shift
      below sets anyway): the class contrast gets std ``spread``;
    - then ``b_c -= log(C * mean_p_c)``, ``rounds`` times on the rescaled logits of the one forward (the
      bias adds to them, the contrast stays), so that every class has about the same mean probability.

    ``batch``: (B, C_in, *S), 2D or 3D. Returns the classes' final mean probabilities."""
    import torch

    with torch.no_grad():
        logits = model(batch)[0].double()
        view, pixels = (1, -1) + (1,) * (logits.dim() - 2), pixel_dims(logits)
        scale = spread / class_contrast(logits).std().item()
        out_conv.weight *= scale
        out_conv.bias *= scale
        logits *= scale
        shift = torch.zeros(logits.shape[1], dtype=torch.float64)

        def class_means() -> torch.Tensor:
            return torch.softmax(logits + shift.view(view), dim=1).mean(dim=pixels)

        for _ in range(rounds):
            shift -= torch.log(class_means() * logits.shape[1])
        out_conv.bias += shift.to(out_conv.bias.dtype)
        return class_means().tolist()


def proc_status_kib(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in KiB; None where there is none."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return None


def peak_gb() -> float:
    """This process's own peak resident memory so far in GB: ``VmHWM`` (Linux), else ``ru_maxrss`` (KiB; bytes
    on macOS).

    Not ``ru_maxrss`` on Linux: the kernel carries the spawning process's peak over the exec of a subprocess,
    so a worker started by a driver holding 0.9 GB would report at least 0.9 GB; ``VmHWM`` belongs to the
    worker's own address space."""
    kib = proc_status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return kib * 1024 / 1e9


def worker(config_name: str, variant: str, runtime: str, threads: int, warmup: int, repeats: int) -> dict:
    import ssnet.methods.ssnet as ssnet_method

    ssnet_variant = VARIANTS[variant] is not None
    cfg, method, batch = setup_variant(config_name, variant, threads, runtime)
    vat_seconds = []

    def record_vat(measured: bool, step: dict) -> None:
        step["vat"] = sum(vat_seconds)
        vat_seconds.clear()

    with variant_execution(variant):
        if ssnet_variant:
            inner = ssnet_method.vat_loss

            def timed_vat(*args, **kwargs):
                start = time.perf_counter()
                result = inner(*args, **kwargs)
                vat_seconds.append(time.perf_counter() - start)
                return result

            ssnet_method.vat_loss = timed_vat
        steps, out = timed_steps(method, batch, warmup, repeats, 6000, 15000, record_vat)
    wall = [step["total"] for step in steps]
    shares = [phase_shares(step) for step in steps]
    return {"config": config_name, "variant": variant, "runtime": runtime, "threads": threads,
            "batch": batch.image.shape[0], "shape": list(cfg["shape"]),
            "median_s": statistics.median(wall), "steps_s": wall,
            "median_cpu_s": statistics.median(step["cpu"] for step in steps),
            "phases": {name: statistics.median(share[name] for share in shares) for name in shares[0]},
            "smoothness_share": statistics.median(share["vat_passes"] for share in shares) if ssnet_variant else None,
            "peak_gb": peak_gb(), "load_1min": os.getloadavg()[0], "last_logs": out.logs}


def run_in_subprocess(script: Path, worker_args: list[str], runtime: str, args) -> dict:
    """Run ``script --worker *worker_args RUNTIME`` in a fresh process; its JSON result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(script), "--worker", *worker_args, runtime,
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {worker_args}/{runtime} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PHASES = ["forward", "vat_passes", "backward_training", "backward_smoothness", "backward", "sgd"]


def format_table(results: list[dict]) -> str:
    """Markdown: time and peak memory of each variant (against the official code: side_by_side.py), then
    the share of each phase of the iteration."""
    lines = ["| config | variant | runtime | batch | median s/iter | steps (s) | peak GB | max load |",
             "|---|---|---|---|---:|---|---:|---:|"]
    for r in results:
        steps = ", ".join(f"{t:.2f}" for t in r["steps_s"])
        lines.append(f"| {r['config']} | {r['variant']} | {r['runtime']} | {r['batch']} | {r['median_s']:.2f} | "
                     f"{steps} | {r['peak_gb']:.2f} | {r['load_1min']:.1f} |")
    lines += ["", "| config | variant | runtime | " + " | ".join(PHASES) + " |",
              "|---|---|---|" + "---:|" * len(PHASES)]
    for r in results:
        shares = [f"{r['phases'][name]:.0%}" if name in r["phases"] else "-" for name in PHASES]
        lines.append(f"| {r['config']} | {r['variant']} | {r['runtime']} | " + " | ".join(shares) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["la-small", "acdc-small"], choices=sorted(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--runtimes", nargs="+", default=["default", "tuned"], choices=sorted(RUNTIMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the variant sequence (pooled steps)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("CONFIG", "VARIANT", "RUNTIME"), help=argparse.SUPPRESS)
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
                    r = run_in_subprocess(Path(__file__).resolve(), [config, variant], runtime, args)
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
