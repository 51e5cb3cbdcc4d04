"""Side-by-side benchmark: the official SS-Net code (ycwu1997/SS-Net) and this implementation, timed in one run.

    .venv/bin/python benchmarks/side_by_side.py --reference /work/refs/SS-Net/code \\
        [--sizes la-small la-paper acdc-small acdc-paper] [--parts train infer] [--warmup 1] [--repeats 3] \\
        [--rounds 2] [--threads 2] [--json out.json]

Every measurement (part, size, side, round) runs in a fresh subprocess of this script, so that
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is that measurement's peak RSS (the whole process: imports,
model, data); each runs ``--warmup`` unmeasured then ``--repeats`` measured repetitions with ``--threads``
torch threads (``torch.set_num_threads`` and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``). In every round the
official worker runs first, then ours. Reported: the median of the measured repetitions pooled over the
rounds, the largest peak of the rounds, and ratios within the run (speed-up = official median / ours;
peak ratio = ours / official). CPU, float32 on both sides.

Training (one SS-Net iteration; the batch of ``step_time.synthetic_batch``, seeded, the same on both sides):
``la-small`` / ``la-paper``: VNet, batch 4 (2 labelled) of 1x64x64x48 / 1x112x112x80; ``acdc-small`` /
``acdc-paper``: UNet, batch 24 (12 labelled) of 1x128x128 / 1x256x256.
- Official: ``code/train_ss_3d.py`` / ``code/train_ss_2d.py`` run as ``__main__`` (runpy) with argv
  ``--labeled_bs --batch_size --max_iteration(s) N`` (N = warmup + repeats + 1), every other argument its
  default; the network is the script's own ``net_factory`` with its random init; the loop body is unmodified.
  The training loader yields the same batch N times and records ``time.perf_counter()`` at each yield:
  iteration k's time is yield k+1 minus yield k, i.e. the whole loop body (forward, losses, VAT, backward,
  SGD step, and also its per-iteration logging line, medpy Dice (3D) and no-op writer calls); iteration N is
  not timed.
- Ours: ``step_time.setup_step`` + ``step_time.timed_steps`` (zero_grad, ``training_step`` with its staged
  backward, backward, SGD step) with the execution settings of the default ``config.yaml`` read through
  ``ssnet.config`` at run time (``channels_last``, ``cpu_allocator``, ``deterministic``, the ssnet params of
  the dataset, e.g. ``staged_backward`` / ``recompute``, the network block), applied as the trainer applies them.

Inference (random-but-smooth input volume and the official network's seeded random init, loaded into ours
through ``ssnet.networks.reference_names``; eval mode):
- LA: official ``utils/test_3d_patch.test_single_case`` with ``net_factory('VNet', mode='test')``; ours
  ``sliding_window_predict`` (what ``LA.predict_volume`` runs for ``predict_case``) with the config's
  ``batch_size``. Neither includes the largest-component step. ``la-paper``: volume 175x132x88, patch
  112x112x80, strides 18/4 (45 windows, the real geometry); ``la-small``: volume 100x75x53, patch 64x64x48,
  strides 10/3 (also 5x3x3 = 45 windows). Check: same label map except voxels whose probability is within
  1e-4 of 0.5; the largest probability difference is reported.
- ACDC: official ``utils/val_2d.test_single_volume`` (zoom each slice to the patch, predict, zoom back, then
  medpy Dice + HD95 per class); ours ``predict_case`` (``predict_volume_2d``, the config's ``batch_size``,
  no largest component as configured) then ``reference_val_2d_metrics`` (the same values; it goes through
  ``binary_metrics``, which also computes Jaccard and ASD and drops them: more metric work). Two rows: the
  prediction alone (official: the call minus the time spent in its ``calculate_metric_percase``, timed by a
  wrapper that also records the class masks it is given, from which the label map is rebuilt) and
  prediction + metrics. Volume 10 x 216 x 256; patch 128x128 (``acdc-small``) or 256x256 (``acdc-paper``).
  Check: same label map except pixels whose top-2 softmax margin (ours) is under 1e-4.

Shims on the official side (environment only, none changes what the code computes): stub modules for
uninstalled imports (``missing_module_stubs`` of ``tests/golden/make_ssnet_steps.py``: tensorboardX, a writer
keeping the last ``add_scalar`` values, the JSON's ``last_logs``; tqdm, torchvision, skimage, nibabel),
``.cuda()`` a no-op, ``shutil.copytree`` a no-op, the datasets replaced (``LAHeart`` / ``BaseDataSets``)
and ``DataLoader`` replaced by the timed loader above, a temporary working directory, and ``np.int = int``
(removed in numpy 1.24; ``test_single_case`` uses ``astype(np.int)``).
Exits 1 when an inference check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks", ROOT / "tests", ROOT / "tests" / "golden"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from make_ssnet_steps import _FakeDataset, _Writer, missing_module_stubs, patched  # noqa: E402
from parity_common import blobs, cuda_noop  # noqa: E402
from step_time import CONFIGS, peak_gb, setup_step, synthetic_batch, timed_steps  # noqa: E402

SIDES = ("official", "ours")
SEED = 1337  # official network init (as the scripts' default --seed) and the inference inputs
NEAR_TIE = 1e-4
SCRIPTS = {"LA": ("train_ss_3d.py", "--max_iteration"), "ACDC": ("train_ss_2d.py", "--max_iterations")}
REFERENCE_FILES = ("train_ss_3d.py", "train_ss_2d.py", "networks/net_factory.py", "utils/test_3d_patch.py",
                   "utils/val_2d.py")
INFERENCE = {
    "la-small": {"volume": (100, 75, 53), "patch": (64, 64, 48), "stride_xy": 10, "stride_z": 3},
    "la-paper": {"volume": (175, 132, 88), "patch": (112, 112, 80), "stride_xy": 18, "stride_z": 4},
    "acdc-small": {"volume": (10, 216, 256), "patch": (128, 128)},
    "acdc-paper": {"volume": (10, 216, 256), "patch": (256, 256)},
}
NETWORKS = {"LA": {"net_type": "VNet", "in_chns": 1, "class_num": 2, "mode": "test"},
            "ACDC": {"net_type": "unet", "in_chns": 1, "class_num": 4}}


# ------------------------------------------------------------------------------------ official code
@contextlib.contextmanager
def official_code(code_dir: Path):
    """The official code importable and runnable here (see the module docstring's shims); cwd a temp dir."""
    if not hasattr(np, "int"):
        np.int = int
    sys.modules.update(missing_module_stubs())
    sys.path.insert(0, str(code_dir))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ssnet_official_") as workdir, contextlib.ExitStack() as stack:
        import torch

        for target, name, value in [(torch.Tensor, "cuda", cuda_noop), (torch.nn.Module, "cuda", cuda_noop),
                                    (shutil, "copytree", lambda *a, **k: None)]:
            stack.enter_context(patched(target, name, value))
        os.chdir(workdir)
        try:
            yield
        finally:
            os.chdir(cwd)
            sys.path.remove(str(code_dir))


def timed_loader(sample: dict, n: int, stamps: list):
    """DataLoader stand-in: the training loader yields ``sample`` ``n`` times, appending
    ``time.perf_counter()`` to ``stamps`` at each yield; other loaders (validation) are empty."""
    class Loader:
        def __init__(self, dataset, batch_sampler=None, **kwargs):
            self.training = batch_sampler is not None

        def __len__(self):
            return n if self.training else 0

        def __iter__(self):
            for _ in range(n if self.training else 0):
                stamps.append(time.perf_counter())
                yield sample

    return Loader


def official_train(size: str, code_dir: Path, warmup: int, repeats: int) -> dict:
    """Run the official training script for warmup + repeats + 1 iterations; per-iteration times."""
    import torch
    import torch.utils.data

    cfg = CONFIGS[size]
    n_l, batch_size = cfg["labelled"], cfg["labelled"] + cfg["unlabelled"]
    batch = synthetic_batch(cfg, n_l, cfg["unlabelled"])
    label = torch.zeros((batch_size, *cfg["shape"]), dtype=torch.int64 if cfg["dim"] == 3 else torch.uint8)
    label[:n_l] = batch.label  # dtypes of the scripts' ToTensor (3D) / RandomGenerator (2D)
    sample = {"image": batch.image, "label": label}
    n, stamps = warmup + repeats + 1, []
    script, iterations = SCRIPTS[cfg["dataset"]]
    argv = [script, iterations, str(n), "--labeled_bs", str(n_l), "--batch_size", str(batch_size)]
    with official_code(code_dir):
        import dataloaders.dataset as dataset_module

        with contextlib.ExitStack() as stack:
            for target, name, value in [(dataset_module, "LAHeart", _FakeDataset),
                                        (dataset_module, "BaseDataSets", _FakeDataset),
                                        (torch.utils.data, "DataLoader", timed_loader(sample, n, stamps)),
                                        (sys, "argv", argv)]:
                stack.enter_context(patched(target, name, value))
            runpy.run_path(str(code_dir / script), run_name="__main__")
    assert len(stamps) == n, f"{script} asked for {len(stamps)} batches, expected {n}"
    return {"times": {"iteration": list(np.diff(stamps)[warmup:])}, "peak_gb": peak_gb(),
            "last_logs": dict(_Writer.scalars)}


def official_infer(size: str, code_dir: Path, workdir: Path, warmup: int, repeats: int) -> dict:
    """Time the official test function on the prepared volume; save its prediction."""
    import torch

    dataset, geometry = CONFIGS[size]["dataset"], INFERENCE[size]
    inputs = np.load(workdir / f"{size}-input.npz")
    with official_code(code_dir):
        from networks.net_factory import net_factory

        model = net_factory(**NETWORKS[dataset])
        model.load_state_dict(torch.load(workdir / f"{dataset}-weights.pt"))
        model.eval()
        times: dict[str, list] = {"prediction": []}
        if dataset == "LA":
            from utils.test_3d_patch import test_single_case

            for _ in range(warmup + repeats):
                start = time.perf_counter()
                prediction, score_map = test_single_case(model, inputs["image"], geometry["stride_xy"],
                                                         geometry["stride_z"], geometry["patch"], num_classes=2)
                times["prediction"].append(time.perf_counter() - start)
            outputs = {"prediction": prediction, "prob": score_map[0]}
        else:
            import utils.val_2d as val_2d

            original, masks, metric_seconds = val_2d.calculate_metric_percase, [], []

            def timed_metric(pred, gt):
                """Record the class mask and the time of one official metric call."""
                masks.append(pred)
                start = time.perf_counter()
                result = original(pred, gt)
                metric_seconds.append(time.perf_counter() - start)
                return result

            times["prediction + metrics"] = []
            image, label = torch.from_numpy(inputs["image"])[None], torch.from_numpy(inputs["label"])[None]
            with patched(val_2d, "calculate_metric_percase", timed_metric):
                for _ in range(warmup + repeats):
                    masks.clear()
                    metric_seconds.clear()
                    start = time.perf_counter()
                    metrics = val_2d.test_single_volume(image, label, model, classes=4,
                                                        patch_size=list(geometry["patch"]))
                    total = time.perf_counter() - start
                    times["prediction"].append(total - sum(metric_seconds))
                    times["prediction + metrics"].append(total)
            outputs = {"prediction": sum((c + 1) * m.astype(np.uint8) for c, m in enumerate(masks)),
                       "metrics": np.asarray(metrics, dtype=np.float64)}
    peak = peak_gb()
    np.savez(workdir / f"{size}-official.npz", **outputs)
    return {"times": {k: v[warmup:] for k, v in times.items()}, "peak_gb": peak}


# ------------------------------------------------------------------------------------ our code
def ours_train(size: str, run_cfg: dict, threads: int, warmup: int, repeats: int) -> dict:
    """Time our SS-Net iterations with the config's execution settings (as ``Trainer.__init__`` applies them)."""
    from ssnet.runtime import apply_cpu_allocator
    from ssnet.seeding import set_deterministic

    set_deterministic(bool(run_cfg["deterministic"]))
    apply_cpu_allocator(run_cfg)
    layout = "channels-last" if run_cfg["channels_last"] else "default"  # step_time runtime: layout only
    cfg = {**CONFIGS[size], "network": run_cfg["network"]}
    _, method, batch = setup_step(cfg, "ssnet", run_cfg["params"], threads, layout)
    steps, out = timed_steps(method, batch, warmup, repeats, 0, run_cfg["training"]["iterations"])
    return {"times": {"iteration": [s["total"] for s in steps]}, "peak_gb": peak_gb(), "last_logs": out.logs}


def ours_network(run_cfg: dict, weights: Path):
    """The evaluation's network (``evaluation_network``: eval mode, the run's memory layout) with the official weights."""
    import torch

    from ssnet.engine.checkpoint import build_method
    from ssnet.evaluation.evaluate import evaluation_network
    from ssnet.networks.reference_names import load_reference_state

    method = build_method(run_cfg)
    load_reference_state(method.network, torch.load(weights), method.heads)
    return evaluation_network(method.eval(), run_cfg, torch.device("cpu"))


def acdc_margins(network, volume: np.ndarray, size) -> np.ndarray:
    """Per-pixel top-1 minus top-2 softmax probability, mapped to the volume as the label map is (order-0 zooms)."""
    import scipy.ndimage
    import torch

    _, h, w = volume.shape
    out = np.zeros(volume.shape, dtype=np.float32)
    with torch.inference_mode():
        for i, image in enumerate(volume):
            zoomed = scipy.ndimage.zoom(image, (size[0] / h, size[1] / w), order=0)
            logits = network(torch.from_numpy(zoomed.astype(np.float32))[None, None])[0]
            top = torch.softmax(logits, dim=1).topk(2, dim=1).values[0]
            out[i] = scipy.ndimage.zoom((top[0] - top[1]).numpy(), (h / size[0], w / size[1]), order=0)
    return out


def ours_infer(size: str, run_cfg: dict, threads: int, workdir: Path, warmup: int, repeats: int) -> dict:
    """Time our evaluation's prediction (and, for ACDC, the val_2d metrics) on the prepared volume."""
    import torch

    from ssnet.datasets import get_dataset
    from ssnet.evaluation.inference import sliding_window_predict
    from ssnet.evaluation.metrics import reference_val_2d_metrics
    from ssnet.evaluation.predict import predict_case
    from ssnet.runtime import apply_cpu_allocator

    torch.set_num_threads(threads)
    apply_cpu_allocator(run_cfg)  # as evaluate_run
    dataset, geometry = get_dataset(run_cfg["dataset"]), INFERENCE[size]
    inputs = np.load(workdir / f"{size}-input.npz")
    network = ours_network(run_cfg, workdir / f"{dataset.name}-weights.pt")
    times: dict[str, list] = {"prediction": []}
    if dataset.name == "LA":
        for _ in range(warmup + repeats):
            start = time.perf_counter()
            prediction, prob = sliding_window_predict(
                network, inputs["image"], geometry["patch"], geometry["stride_xy"], geometry["stride_z"],
                n_classes=2, batch_size=run_cfg["inference"]["batch_size"], device="cpu")
            times["prediction"].append(time.perf_counter() - start)
        peak, outputs = peak_gb(), {"prediction": prediction, "prob": prob}
    else:
        inference = {**run_cfg["inference"], "patch_size": list(geometry["patch"])}
        times["prediction + metrics"] = []
        for _ in range(warmup + repeats):
            start = time.perf_counter()
            prediction = predict_case(network, inputs["image"], dataset, inference, torch.device("cpu"))
            predicted = time.perf_counter()
            metrics = reference_val_2d_metrics(prediction, inputs["label"], dataset.n_classes)
            times["prediction"].append(predicted - start)
            times["prediction + metrics"].append(time.perf_counter() - start)
        peak = peak_gb()  # before the check's extra forwards
        outputs = {"prediction": prediction, "metrics": np.asarray(metrics, dtype=np.float64),
                   "margin": acdc_margins(network, inputs["image"], geometry["patch"])}
    np.savez(workdir / f"{size}-ours.npz", **outputs)
    return {"times": {k: v[warmup:] for k, v in times.items()}, "peak_gb": peak}


# ------------------------------------------------------------------------------------ driver
def check_reference(path: Path) -> Path:
    """The resolved official ``code/`` folder; SystemExit naming the path when it is not one."""
    if not path.is_dir():
        sys.exit(f"--reference {path}: no such directory (expected the official SS-Net code/ folder)")
    missing = [f for f in REFERENCE_FILES if not (path / f).is_file()]
    if missing:
        sys.exit(f"--reference {path}: not the official SS-Net code/ folder (missing {', '.join(missing)})")
    return path.resolve()


def run_settings(dataset: str, overlays: list[Path]) -> dict:
    """The run config of ssnet on ``dataset`` (first labelled count) from config.yaml (+ ``overlays``)."""
    from ssnet.config import labelled_values, load_config, run_config

    config = load_config([ROOT / "config.yaml", *overlays])
    return run_config(config, dataset, "ssnet", labelled_values(config, dataset, "ssnet")[0])


def describe(run_cfg: dict) -> str:
    """One line: the settings our side runs with."""
    p, allocator = run_cfg["params"], run_cfg["cpu_allocator"]
    return (f"{run_cfg['dataset']}: channels_last={run_cfg['channels_last']}, cpu_allocator mmap/trim="
            f"{allocator['mmap_threshold_mb']}/{allocator['trim_threshold_mb']} MB, deterministic="
            f"{run_cfg['deterministic']}, staged_backward={p['staged_backward']}, recompute={p['recompute']}, "
            f"network={run_cfg['network']}, inference batch_size={run_cfg['inference']['batch_size']}")


def prepare_inference(workdir: Path, code_dir: Path, sizes: list[str]) -> None:
    """Seeded inputs per size and the official networks' seeded random init per dataset, as files."""
    import torch

    for size in sizes:
        g = torch.Generator().manual_seed(SEED)
        shape = INFERENCE[size]["volume"]
        if CONFIGS[size]["dataset"] == "LA":
            np.savez(workdir / f"{size}-input.npz", image=blobs((1, 1, *shape), g)[0, 0].numpy())
        else:
            image = blobs((shape[0], 1, *shape[1:]), g)[:, 0]
            label = torch.bucketize(blobs((shape[0], 1, *shape[1:]), g)[:, 0], torch.tensor([-0.5, 0.0, 0.5]))
            np.savez(workdir / f"{size}-input.npz", image=image.numpy(), label=label.numpy().astype(np.uint8))
    with official_code(code_dir):
        from networks.net_factory import net_factory

        for dataset in sorted({CONFIGS[size]["dataset"] for size in sizes}):
            torch.manual_seed(SEED)
            torch.save(net_factory(**NETWORKS[dataset]).state_dict(), workdir / f"{dataset}-weights.pt")


def compare(workdir: Path, size: str) -> dict:
    """Our prediction against the official one (last round); ``ok`` when they differ only at near-ties."""
    official, ours = np.load(workdir / f"{size}-official.npz"), np.load(workdir / f"{size}-ours.npz")
    differ = official["prediction"] != ours["prediction"]
    if CONFIGS[size]["dataset"] == "LA":
        near_tie = np.abs(ours["prob"] - 0.5) < NEAR_TIE
        extra = {"max_prob_diff": float(np.abs(official["prob"] - ours["prob"]).max())}
    else:
        near_tie = ours["margin"] < NEAR_TIE
        extra = {"max_metric_diff": float(np.abs(official["metrics"] - ours["metrics"]).max())}
    bad = int((differ & ~near_tie).sum())
    return {"ok": bad == 0, "differing": int(differ.sum()), "differing_not_near_tie": bad,
            "near_tie": int(near_tie.sum()), "class_counts": np.bincount(official["prediction"].ravel()).tolist(),
            **extra}


def run_worker(part: str, side: str, size: str, workdir: Path, args) -> dict:
    """One measurement in a fresh process of this script; its result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", part, side, size, str(workdir),
           "--reference", str(args.reference), "--threads", str(args.threads), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {part} {size} failed:\n{done.stderr[-3000:]}")
    return json.loads((workdir / f"{size}-{part}-{side}.json").read_text())


def worker(part: str, side: str, size: str, workdir: Path, args) -> None:
    """Entry point of a measurement subprocess: writes ``SIZE-PART-SIDE.json`` into ``workdir``."""
    import torch

    torch.set_num_threads(args.threads)
    run_cfg = json.loads((workdir / f"settings-{CONFIGS[size]['dataset']}.json").read_text())
    if part == "train":
        result = (official_train(size, args.reference, args.warmup, args.repeats) if side == "official"
                  else ours_train(size, run_cfg, args.threads, args.warmup, args.repeats))
    else:
        result = (official_infer(size, args.reference, workdir, args.warmup, args.repeats) if side == "official"
                  else ours_infer(size, run_cfg, args.threads, workdir, args.warmup, args.repeats))
    (workdir / f"{size}-{part}-{side}.json").write_text(json.dumps(result))


def measure(part: str, size: str, workdir: Path, args) -> dict:
    """``--rounds`` alternating official / ours measurements of one (part, size), pooled."""
    pooled = {side: {"times": {}, "peak_gb": []} for side in SIDES}
    for r in range(args.rounds):
        for side in SIDES:
            result = run_worker(part, side, size, workdir, args)
            for key, values in result["times"].items():
                pooled[side]["times"].setdefault(key, []).extend(values)
            pooled[side]["peak_gb"].append(result["peak_gb"])
            pooled[side]["last_logs"] = result.get("last_logs")
            timed = ", ".join(f"{key} {statistics.median(v):.2f} s ({', '.join(f'{t:.2f}' for t in v)})"
                              for key, v in result["times"].items())
            print(f"[{size} {part} round {r + 1}/{args.rounds}] {side}: {timed}; peak {result['peak_gb']:.2f} GB",
                  flush=True)
    out = {"size": size, "part": part, **pooled, "rows": []}
    for key in pooled["official"]["times"]:
        official, ours = (statistics.median(pooled[side]["times"][key]) for side in SIDES)
        out["rows"].append({"measure": key, "official_median_s": official, "ours_median_s": ours,
                            "speedup": official / ours})
    out["official_peak_gb"], out["ours_peak_gb"] = (max(pooled[side]["peak_gb"]) for side in SIDES)
    out["peak_ratio"] = out["ours_peak_gb"] / out["official_peak_gb"]
    if part == "infer":
        out["check"] = compare(workdir, size)
    return out


def format_tables(results: list[dict]) -> str:
    """Markdown, one table per size."""
    blocks = []
    for size in dict.fromkeys(r["size"] for r in results):
        lines = [f"### {size}", "",
                 "| part | official median s | ours median s | speed-up | official peak GB | ours peak GB "
                 "| peak ratio | official times (s) | ours times (s) | same prediction |",
                 "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
        for r in (r for r in results if r["size"] == size):
            check = r.get("check")
            same = "-" if check is None else (
                f"{'yes' if check['ok'] else 'NO'} ({check['differing']} differ, "
                f"{check['differing_not_near_tie']} not near-tie"
                + (f", max prob diff {check['max_prob_diff']:.1e})" if "max_prob_diff" in check else ")"))
            for row in r["rows"]:
                times = [", ".join(f"{t:.2f}" for t in r[side]["times"][row["measure"]]) for side in SIDES]
                lines.append(f"| {r['part']}: {row['measure']} | {row['official_median_s']:.2f} | "
                             f"{row['ours_median_s']:.2f} | {row['speedup']:.2f}x | {r['official_peak_gb']:.2f} | "
                             f"{r['ours_peak_gb']:.2f} | {r['peak_ratio']:.2f} | {times[0]} | {times[1]} | {same} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="the official SS-Net code/ folder")
    parser.add_argument("--sizes", nargs="+", default=list(INFERENCE), choices=list(INFERENCE))
    parser.add_argument("--parts", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="overlays on config.yaml for our side (default: none, the default config)")
    parser.add_argument("--worker", nargs=4, metavar=("PART", "SIDE", "SIZE", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.reference = check_reference(args.reference)
    if args.worker:
        part, side, size, workdir = args.worker
        worker(part, side, size, Path(workdir), args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        workdir = Path(tmp)
        settings = {d: run_settings(d, args.configfile) for d in dict.fromkeys(CONFIGS[s]["dataset"] for s in args.sizes)}
        for dataset, run_cfg in settings.items():
            (workdir / f"settings-{dataset}.json").write_text(json.dumps(run_cfg))
            source = " + ".join(["config.yaml", *map(str, args.configfile)])
            print(f"ours, settings of {source}: {describe(run_cfg)}", flush=True)
        if "infer" in args.parts:
            prepare_inference(workdir, args.reference, args.sizes)
        for size in args.sizes:
            for part in args.parts:
                results.append(measure(part, size, workdir, args))
                if args.json:
                    args.json.write_text(json.dumps({"settings": settings, "threads": args.threads,
                                                     "warmup": args.warmup, "repeats": args.repeats,
                                                     "configfiles": list(map(str, args.configfile)),
                                                     "rounds": args.rounds, "results": results}, indent=1))
    print(format_tables(results))
    if not all(r.get("check", {"ok": True})["ok"] for r in results):
        sys.exit("inference predictions differ beyond near-ties (see the table)")


if __name__ == "__main__":
    main()
