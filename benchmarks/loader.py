"""Benchmark: training batches per second delivered by the data loader on CPU, ours against the reference's.

Synthetic h5 files at real sizes are written into a temporary folder twice, gzip-compressed like both
preprocessors write them: in our preprocessed layout (LA ``cases/<ID>.h5``, ACDC ``slices/<name>.h5``) and in
the layout the official SS-Net code reads (``LA/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` + ``train.list``,
``ACDC/data/slices/<name>.h5`` + ``train_slices.list``). Then, alternating in rounds, it times:

- ``ours``: :func:`ssnet.data.loading.training_stream` + :func:`~ssnet.data.loading.training_loader` (what
  :meth:`ssnet.engine.trainer.Trainer.batches` runs), the dataset's augmentation and the batch sizes, patch
  and ``crop_pad_extra`` of ``config.yaml``, for each ``--workers`` count;
- ``reference`` (with ``--reference DIR``, a checkout of github:ycwu1997/SS-Net): its ``LAHeart`` +
  ``RandomRotFlip``/``RandomCrop``/``ToTensor`` or ``BaseDataSets`` + ``RandomGenerator`` with its
  ``TwoStreamBatchSampler`` in a torch DataLoader, batch sizes of its training scripts (LA 2 + 2, ACDC
  12 + 12), the same worker counts, epoch after epoch as its training loop iterates them (workers restart
  every epoch). ``pin_memory`` is off for both: there is no GPU here.

A rate is 1 / the median time between consecutive batches after ``--warmup`` batches (pooled over the
rounds); ``overall`` is the batches over the wall time, epoch restarts included. Ratios are ours / reference
at the same worker count, within the run.

    .venv/bin/python benchmarks/loader.py [--reference /tmp/ref_ssnet] [--datasets LA ACDC] [--workers 0 2]
        [--batches 150] [--warmup 10] [--rounds 2] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import random
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssnet.config import load_config  # noqa: E402
from ssnet.data.loading import TrainingSplit, training_loader, training_stream  # noqa: E402
from ssnet.datasets import get_dataset  # noqa: E402
from ssnet.engine.trainer import _worker_init  # noqa: E402

SEED = 1337
LA_CASES, LA_LABELLED, LA_DEPTH, LA_XY = 16, 8, 88, (112, 141)  # x, y drawn from [112, 141)
ACDC_PATIENTS, ACDC_LABELLED = 10, 3
ACDC_SHAPES = ((256, 216), (256, 216), (232, 256), (216, 256), (256, 256), (224, 208))  # H x W per patient
REF_BATCHES = {"LA": (4, 2), "ACDC": (24, 12)}  # (batch_size, labeled_bs) of train_ss_3d.py / train_ss_2d.py


# ----------------------------------------------------------------------------------- data
def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=image, compression="gzip")
        handle.create_dataset("label", data=label, compression="gzip")


def _sample(rng: np.random.Generator, shape, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A normalised float32 image (smooth structure + noise) and a blob label with ``classes`` values."""
    coarse = rng.standard_normal(tuple(-(-s // 8) for s in shape))
    smooth = np.kron(coarse, np.ones((8,) * len(shape)))[tuple(slice(0, s) for s in shape)]
    image = smooth + 0.3 * rng.standard_normal(shape)
    image = ((image - image.mean()) / image.std()).astype(np.float32)
    label = np.digitize(smooth, np.linspace(0.5, 1.5, classes - 1)).astype(np.uint8)
    return image, label


def write_la(root: Path) -> TrainingSplit:
    """16 cases of (112..140) x (112..140) x 88 in both layouts; the first 8 labelled."""
    rng = np.random.default_rng(SEED)
    names = [f"CASE{i:02d}" for i in range(LA_CASES)]
    for name in names:
        image, label = _sample(rng, (*rng.integers(*LA_XY, size=2), LA_DEPTH), 2)
        _write_h5(root / "ours" / "cases" / f"{name}.h5", image, label)
        _write_h5(root / "ref" / "LA" / "2018LA_Seg_Training Set" / name / "mri_norm2.h5", image, label)
    (root / "ref" / "LA" / "train.list").write_text("\n".join(names) + "\n")
    return TrainingSplit(names[:LA_LABELLED], names[LA_LABELLED:], [], False, LA_LABELLED, LA_CASES - LA_LABELLED)


def write_acdc(root: Path) -> TrainingSplit:
    """10 patients x 2 frames x 8..10 slices of their patient's H x W in both layouts; 3 patients labelled."""
    rng = np.random.default_rng(SEED)
    names, labelled = [], 0
    for patient in range(1, ACDC_PATIENTS + 1):
        shape = ACDC_SHAPES[patient % len(ACDC_SHAPES)]
        for frame in (1, 2):
            for k in range(1, int(rng.integers(8, 11)) + 1):
                name = f"patient{patient:03d}_frame{frame:02d}_slice_{k}"
                image, label = _sample(rng, shape, 4)
                _write_h5(root / "ours" / "slices" / f"{name}.h5", image, label)
                _write_h5(root / "ref" / "ACDC" / "data" / "slices" / f"{name}.h5", image, label)
                names.append(name)
        labelled = len(names) if patient == ACDC_LABELLED else labelled
    (root / "ref" / "ACDC" / "train_slices.list").write_text("\n".join(names) + "\n")
    return TrainingSplit(names[:labelled], names[labelled:], [], False, ACDC_LABELLED, ACDC_PATIENTS - ACDC_LABELLED)


# ----------------------------------------------------------------------------------- loaders
def ours(root: Path, name: str, split: TrainingSplit, training: dict, workers: int):
    """Endless batches of our training loader (the trainer's path)."""
    stream = training_stream(root / "ours", get_dataset(name), split, {**training, "iterations": 10**9}, SEED, True)
    yield from training_loader(stream, workers, pin_memory=False, worker_init_fn=_worker_init)


class _Compose:
    """torchvision.transforms.Compose (torchvision is not a dependency here)."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, sample):
        for transform in self.transforms:
            sample = transform(sample)
        return sample


def _ref_worker_init(worker_id: int) -> None:
    """The reference scripts' worker_init_fn."""
    random.seed(SEED + worker_id)


def import_reference(code_dir: Path):
    """``dataloaders.dataset`` of the reference checkout (``skimage``, imported there but unused by the
    training transforms, is stubbed when absent)."""
    if importlib.util.find_spec("skimage") is None:
        sys.modules["skimage"] = types.SimpleNamespace(transform=None)
    sys.path.insert(0, str(code_dir))
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module("dataloaders.dataset")


def reference(module, root: Path, name: str, split: TrainingSplit, training: dict, workers: int):
    """Endless batches of the reference's training loader, epoch after epoch as its training loop."""
    batch, labelled_bs = REF_BATCHES[name]
    with contextlib.redirect_stdout(io.StringIO()):
        if name == "LA":
            transform = _Compose([module.RandomRotFlip(), module.RandomCrop(tuple(training["patch_size"])),
                                  module.ToTensor()])
            dataset = module.LAHeart(base_dir=str(root / "ref" / "LA"), split="train", transform=transform)
        else:
            transform = _Compose([module.RandomGenerator(training["patch_size"])])
            dataset = module.BaseDataSets(base_dir=str(root / "ref" / "ACDC"), split="train", transform=transform)
    n = len(split.labelled)
    sampler = module.TwoStreamBatchSampler(list(range(n)), list(range(n, len(dataset))), batch, batch - labelled_bs)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=False,
                                         worker_init_fn=_ref_worker_init)
    while True:
        yield from loader


# ----------------------------------------------------------------------------------- timing
def time_batches(batches, count: int, warmup: int) -> tuple[list[float], float]:
    """Intervals between the batches after ``warmup``, and the wall time over them."""
    for _ in range(warmup):
        next(batches)
    stamps = [time.perf_counter()]
    for _ in range(count):
        next(batches)
        stamps.append(time.perf_counter())
    batches.close()  # shuts its workers down before the next measurement
    return list(np.diff(stamps)), stamps[-1] - stamps[0]


def measure(args, data: dict, module) -> list[dict]:
    """Every (dataset, loader, workers), alternating within each round; rates from the pooled intervals."""
    variants = [(name, kind, w) for name in args.datasets for w in args.workers
                for kind in (("ours", "reference") if module else ("ours",))]
    pooled = {v: ([], 0.0) for v in variants}
    for round_ in range(args.rounds):
        for name, kind, workers in variants:
            root, split, training = data[name]
            make = ours if kind == "ours" else lambda *a: reference(module, *a)
            intervals, wall = time_batches(make(root, name, split, training, workers), args.batches, args.warmup)
            previous, total = pooled[(name, kind, workers)]
            pooled[(name, kind, workers)] = (previous + intervals, total + wall)
            print(f"round {round_ + 1} {name} {kind} workers={workers}: {1 / statistics.median(intervals):.2f} "
                  f"batches/s", file=sys.stderr, flush=True)
    return [{"dataset": name, "loader": kind, "workers": workers,
             "median_rate": 1 / statistics.median(pooled[(name, kind, workers)][0]),
             "overall_rate": len(pooled[(name, kind, workers)][0]) / pooled[(name, kind, workers)][1],
             "batches": len(pooled[(name, kind, workers)][0])} for name, kind, workers in variants]


def table(rows: list[dict]) -> str:
    """Markdown table with ours / reference at the same worker count."""
    rates = {(r["dataset"], r["loader"], r["workers"]): r["median_rate"] for r in rows}
    lines = ["| dataset | loader | workers | batches/s (median) | batches/s (overall) | ours / reference |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ref = rates.get((r["dataset"], "reference", r["workers"]))
        ratio = f"{r['median_rate'] / ref:.2f}" if r["loader"] == "ours" and ref else "-"
        lines.append(f"| {r['dataset']} | {r['loader']} | {r['workers']} | {r['median_rate']:.2f} | "
                     f"{r['overall_rate']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="checkout of github:ycwu1997/SS-Net (its code/ folder)")
    parser.add_argument("--datasets", nargs="+", default=["LA", "ACDC"], choices=["LA", "ACDC"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--batches", type=int, default=150, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first (worker start-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads, as the trainer")
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    module = import_reference(args.reference / "code") if args.reference else None
    with contextlib.chdir(ROOT):  # the config's paths are relative to the repository
        config = load_config([args.config.resolve()])
    with tempfile.TemporaryDirectory(prefix="ssnet-loader-") as tmp:
        writers = {"LA": write_la, "ACDC": write_acdc}
        data = {name: (Path(tmp), writers[name](Path(tmp)), config["datasets"][name]["training"])
                for name in args.datasets}
        rows = measure(args, data, module)
    print(table(rows))
    print("reference: " + (str(args.reference) if module else "not given (--reference DIR): ours only"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
