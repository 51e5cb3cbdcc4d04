"""Side-by-side benchmark: the official code of SS-Net and of the comparison methods against this
implementation, timed in one run.

    .venv/bin/python benchmarks/side_by_side.py --reference /work/refs/SS-Net/code \\
        [--methods ssnet uamt dtc mcnet urpc] [--ua-mt /work/refs/UA-MT/code] [--dtc /work/refs/DTC/code] \\
        [--mc-net /work/refs/MC-Net/code] [--ssl4mis /work/refs/SSL4MIS/code] \\
        [--sizes la-small la-paper acdc-small acdc-paper] [--parts train infer] [--warmup 1] [--repeats 3] \\
        [--rounds 2] [--threads 2] [--json out.json] [--configfile overlay.yaml ...]

``--methods`` defaults to ``ssnet``. A repository option is required only by the methods run from it:
``--reference`` (the official SS-Net ``code/`` folder) ssnet; ``--ua-mt`` uamt on LA; ``--ssl4mis`` uamt and
urpc on ACDC; ``--dtc`` dtc; ``--mc-net`` mcnet. (Method, size) pairs without an official script are skipped
with a note: dtc on ACDC (its only 2D script is in the unmerged SSL4MIS pull request #37, not in the
repository) and urpc on LA (SSL4MIS has only a 3D U-Net script, another backbone). Inference (``--parts
infer``) is compared for SS-Net only.

Every measurement (method, part, size, side, round) runs in a fresh subprocess of this script, so that its
peak RSS (``VmHWM``, ``step_time.peak_gb``; not ``ru_maxrss``, which on Linux starts from the driver's peak)
is that measurement's (the whole process: imports, model, data); each runs ``--warmup`` unmeasured then
``--repeats`` measured repetitions with ``--threads`` torch threads (``torch.set_num_threads`` and
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``). In every round the official worker runs first, then ours.
Reported, per (method, size): the median of the measured repetitions pooled over the rounds, the largest peak
of the rounds, and ratios within the run (speed-up = official median / ours; peak ratio = ours / official).
CPU, float32 on both sides. ``--json``: ``settings`` (our run config per method and dataset), the options, and
``results`` (per method, size and part: ``official_code``, each side's times, peaks and last logged values,
the table's rows, the inference check).

Training (one iteration of the method; the batch of ``step_time.synthetic_batch``, seeded, the same on both
sides): ``la-small`` / ``la-paper``: VNet, batch 4 (2 labelled) of 1x64x64x48 / 1x112x112x80; ``acdc-small``
/ ``acdc-paper``: UNet, batch 24 (12 labelled) of 1x128x128 / 1x256x256.
- Official: the script runs as ``__main__`` with argv ``ITERATIONS N --labeled_bs L --batch_size B`` (N =
  warmup + repeats + 1; each script's own option name for the iteration count) plus the arguments listed,
  every other argument its default; the network is the script's own with its random init; the loop body is
  unmodified. Scripts (``OFFICIAL``):
  - ssnet, LA / ACDC: ycwu1997/SS-Net ``code/train_ss_3d.py`` (``--max_iteration``) / ``code/train_ss_2d.py``
    (``--max_iterations``);
  - uamt, LA: yulequan/UA-MT ``code/train_LA_meanteacher_certainty_unlabel.py`` (``--max_iterations``; source
    shim below); ACDC: HiLab-git/SSL4MIS ``code/train_uncertainty_aware_mean_teacher_2D.py``
    (``--max_iterations``, ``--labeled_num 7``: its default 136 is no key of its ``patients_to_slices`` table);
  - dtc, LA: HiLab-git/DTC ``code/train_la_dtc.py`` (``--max_iterations``);
  - mcnet, LA / ACDC: ycwu1997/MC-Net ``code/train_mcnet_3d.py`` (``--max_iteration``) /
    ``code/train_mcnet_2d.py`` (``--max_iterations``);
  - urpc, ACDC: SSL4MIS ``code/train_uncertainty_rectified_pyramid_consistency_2D.py`` (``--max_iterations``).
  The training loader yields the same batch N times and records ``time.perf_counter()`` at each yield:
  iteration k's time is yield k+1 minus yield k, i.e. the whole loop body (forward, losses, backward, SGD
  step, UA-MT's EMA update, and also the script's per-iteration logging line, no-op writer calls, SS-Net 3D's
  medpy Dice, DTC's Dice metric); iteration N is not timed. Checks: the script asked for exactly N batches and
  the values it last logged are finite (``SummaryWriter.add_scalar`` values, and the numbers of its
  per-iteration ``logging.info`` lines as ``log/<name>``: MC-Net 2D logs its losses only there).
- Ours: ``step_time.setup_step`` + ``step_time.timed_steps`` (zero_grad, ``training_step`` - SS-Net's with its
  staged backward -, backward, SGD step and the method's ``after_optimizer_step``, e.g. UA-MT's EMA update)
  with the method's run config of the default ``config.yaml`` (``run_config`` for the dataset's first
  labelled count, read through ``ssnet.config`` at run time): its params and network and the execution
  settings (``channels_last``, ``cpu_allocator``, ``deterministic``) applied as the trainer applies them,
  in a process started under the allocator our jobs run (``cpu_allocator.library``: jemalloc where installed,
  ``ssnet.allocator``); the official workers start under glibc malloc with its defaults, as the official
  code runs. Each table names both sides' malloc. Check: the logged loss terms are finite.

Inference (SS-Net only; random-but-smooth input volume and the official network's seeded random init, loaded
into ours through ``ssnet.networks.reference_names``; eval mode). The init's output convolution is first
rescaled and its bias shifted (``calibrate_output``; printed) so that the class contrast of its logits has
std 2 and every class about the same mean probability on what the network sees of the input: a random init
alone predicts almost one class everywhere with nearly flat logits (LA: 16 foreground voxels of 2M; ACDC: one
class on ~95% of the pixels), which would make the label check nearly vacuous. The table's check column gives
the near-ties and the official prediction's class counts.
- LA: official ``utils/test_3d_patch.test_single_case`` with ``net_factory('VNet', mode='test')``; ours
  ``sliding_window_predict`` (what ``LA.predict_volume`` runs for ``predict_case``) with the config's
  ``batch_size``. Neither includes the largest-component step. ``la-paper``: volume 175x132x88, patch
  112x112x80, strides 18/4 (45 windows, the real geometry); ``la-small``: volume 100x75x53, patch 64x64x48,
  strides 10/3 (also 5x3x3 = 45 windows). Check: same label map except voxels whose probability is within
  1e-4 of 0.5; the largest probability difference is reported.
- ACDC: official ``utils/val_2d.test_single_volume`` (zoom each slice to the patch, predict, zoom back, then
  medpy Dice + HD95 per class); ours ``predict_case`` (``predict_volume_2d``, the config's ``batch_size``,
  no largest component as configured) then ``reference_val_2d_metrics`` (the same values; it goes through
  ``binary_metrics``: the same two surface-distance passes per class, on the masks' bounding box, plus Jaccard
  and ASD from them, which it drops). Two rows: the
  prediction alone (official: the call minus the time spent in its ``calculate_metric_percase``, timed by a
  wrapper that also records the class masks it is given, from which the label map is rebuilt) and
  prediction + metrics. Volume 10 x 216 x 256; patch 128x128 (``acdc-small``) or 256x256 (``acdc-paper``).
  Check: same label map except pixels whose top-2 softmax margin (ours) is under 1e-4.

Shims on the official side (environment only, none changes what the loop body computes):
- stub modules for uninstalled imports: ``missing_module_stubs`` of ``tests/golden/make_ssnet_steps.py``
  (tensorboardX, a writer keeping the last ``add_scalar`` values, the JSON's ``last_logs``; tqdm, torchvision,
  skimage, nibabel) and, where not installed, placeholders whose every name is a do-nothing class:
  ``torchvision.utils`` (``make_grid``: image logging every 20/50 iterations) and ``torchvision.models``, and
  the packages of the networks SSL4MIS's ``networks/net_factory.py`` imports but these scripts do not build
  (Effi_UNet, SwinUnet and its yacs config, nnU-Net): cv2, yacs, timm, einops, efficientnet_pytorch,
  batchgenerators;
- ``.cuda()`` a no-op, ``shutil.copytree`` a no-op, ``np.int = int`` (removed in numpy 1.24;
  ``test_single_case`` uses ``astype(np.int)``); ``logging.info`` wrapped (``LogLines``: every call passed on,
  the numbers of the ``iteration ...`` lines kept);
- the script's dataset classes (``LAHeart`` / ``BaseDataSets`` of its ``dataloaders`` module) replaced by a
  length-only stand-in and ``DataLoader`` by the timed loader above (validation loaders are empty);
- a temporary working directory ``<tmp>/code``, so that the ``../model`` snapshot folders of UA-MT, DTC and
  SSL4MIS land in the temporary directory, with a ``configs`` link to the checkout's ``configs/`` where it has
  one (SSL4MIS's ``net_factory`` reads ``../code/configs/swin_tiny_patch4_window7_224_lite.yaml`` at import);
- UA-MT LA, source level: the two statements that hard-code the 112x112x80 patch
  (``torch.zeros([stride * T, 2, 112, 112, 80])`` and ``preds.reshape(T, stride, 2, 112, 112, 80)``) get the
  patch shape (the same text at ``la-paper``).
DTC's loop body computes its SDF target with ``compute_sdf`` (``utils/util.py``: scikit-image's
``find_boundaries``), and scikit-image is not a project dependency: run dtc with it importable, best in a run
of its own, e.g. ``pip install --target /tmp/gen_pkgs scikit-image lazy_loader`` then
``PYTHONPATH=/tmp/gen_pkgs .venv/bin/python benchmarks/side_by_side.py --methods dtc --dtc ... --sizes la-small
la-paper`` (the other official scripts would then import the real skimage instead of its stub).
Exits 1 when an inference check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks", ROOT / "tests", ROOT / "tests" / "golden"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from make_ssnet_steps import (_FakeDataset, _Writer, importlib_missing, missing_module_stubs,  # noqa: E402
                              patched)
from parity_common import blobs, cuda_noop, purge_reference_modules  # noqa: E402
from step_time import (CONFIGS, calibrate_output, centre_window, config_run, peak_gb, setup_step,  # noqa: E402
                       synthetic_batch, timed_steps)

SIDES = ("official", "ours")
SEED = 1337  # official network init (as the scripts' default --seed) and the inference inputs
NEAR_TIE = 1e-4
METHODS = ("ssnet", "uamt", "dtc", "mcnet", "urpc")
# argparse dest -> (option, repository whose code/ folder it names)
REPOSITORIES = {"reference": ("--reference", "ycwu1997/SS-Net"), "ua_mt": ("--ua-mt", "yulequan/UA-MT"),
                "dtc": ("--dtc", "HiLab-git/DTC"), "mc_net": ("--mc-net", "ycwu1997/MC-Net"),
                "ssl4mis": ("--ssl4mis", "HiLab-git/SSL4MIS")}
INFERENCE_FILES = ("networks/net_factory.py", "utils/test_3d_patch.py", "utils/val_2d.py")  # SS-Net's
INFERENCE_OFFICIAL = {"LA": "utils/test_3d_patch.py test_single_case", "ACDC": "utils/val_2d.py test_single_volume"}
DATASET_CLASSES = ("LAHeart", "BaseDataSets")
# placeholders for these modules where their package is not installed (see the module docstring)
PLACEHOLDER_MODULES = ("torchvision.utils", "torchvision.models", "torchvision.models.densenet",
                       "torchvision.models.resnet", "cv2", "yacs", "yacs.config", "timm", "timm.models",
                       "timm.models.layers", "einops", "efficientnet_pytorch", "efficientnet_pytorch.utils",
                       "batchgenerators", "batchgenerators.augmentations", "batchgenerators.augmentations.utils")


def no_source_shims(shape: tuple) -> dict:
    """The script runs as it is."""
    return {}


def uamt_patch_shape(shape: tuple) -> dict:
    """UA-MT's LA script hard-codes the 112x112x80 patch in two statements: they get the patch shape."""
    dims = ", ".join(map(str, shape))
    return {"torch.zeros([stride * T, 2, 112, 112, 80])": f"torch.zeros([stride * T, 2, {dims}])",
            "preds.reshape(T, stride, 2, 112, 112, 80)": f"preds.reshape(T, stride, 2, {dims})"}


@dataclasses.dataclass(frozen=True)
class Official:
    """An official training script: its repository (argparse dest), file, iteration-count option, the module
    whose dataset classes are replaced, further argv, modules its loop body really needs, source shims."""

    repo: str
    script: str
    iterations: str
    datasets: str = "dataloaders.dataset"
    argv: tuple = ()
    needs: tuple = ()
    source_shims: Callable[[tuple], dict] = no_source_shims


OFFICIAL = {
    ("ssnet", "LA"): Official("reference", "train_ss_3d.py", "--max_iteration"),
    ("ssnet", "ACDC"): Official("reference", "train_ss_2d.py", "--max_iterations"),
    ("uamt", "LA"): Official("ua_mt", "train_LA_meanteacher_certainty_unlabel.py", "--max_iterations",
                             "dataloaders.la_heart", source_shims=uamt_patch_shape),
    ("uamt", "ACDC"): Official("ssl4mis", "train_uncertainty_aware_mean_teacher_2D.py", "--max_iterations",
                               argv=("--labeled_num", "7")),
    ("dtc", "LA"): Official("dtc", "train_la_dtc.py", "--max_iterations", "dataloaders.la_heart",
                            needs=("skimage",)),
    ("mcnet", "LA"): Official("mc_net", "train_mcnet_3d.py", "--max_iteration"),
    ("mcnet", "ACDC"): Official("mc_net", "train_mcnet_2d.py", "--max_iterations"),
    ("urpc", "ACDC"): Official("ssl4mis", "train_uncertainty_rectified_pyramid_consistency_2D.py",
                               "--max_iterations"),
}
NO_OFFICIAL = {("dtc", "ACDC"): "its only 2D script is in the unmerged SSL4MIS pull request #37",
               ("urpc", "LA"): "SSL4MIS has only a 3D U-Net script (another backbone)"}

INFERENCE = {
    "la-small": {"volume": (100, 75, 53), "patch": (64, 64, 48), "stride_xy": 10, "stride_z": 3},
    "la-paper": {"volume": (175, 132, 88), "patch": (112, 112, 80), "stride_xy": 18, "stride_z": 4},
    "acdc-small": {"volume": (10, 216, 256), "patch": (128, 128)},
    "acdc-paper": {"volume": (10, 216, 256), "patch": (256, 256)},
}
NETWORKS = {"LA": {"net_type": "VNet", "in_chns": 1, "class_num": 2, "mode": "test"},
            "ACDC": {"net_type": "unet", "in_chns": 1, "class_num": 4}}


# ------------------------------------------------------------------------------------ official code
class _AnyMeta(type):
    """Metaclass of :class:`_Any`: subscripting the class gives the class (``url_map[name]``)."""

    def __getitem__(cls, key):
        return cls


class _Any(metaclass=_AnyMeta):
    """Placeholder for every name of an uninstalled package: a class (subclassable, subscriptable) whose
    instances accept any call, attribute or assignment and do nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Any()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any()


class _PlaceholderModule(types.ModuleType):
    """A stub module whose every public name is :class:`_Any`."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any


def placeholder_stubs(stubs: dict) -> dict:
    """``stubs`` plus a placeholder for each of ``PLACEHOLDER_MODULES`` whose package is not installed,
    each set as an attribute of its parent module."""
    out = dict(stubs)
    for name in PLACEHOLDER_MODULES:
        if name not in out and importlib_missing(name.split(".")[0]):
            out[name] = _PlaceholderModule(name)
            parent, _, child = name.rpartition(".")
            if parent in out:
                setattr(out[parent], child, out[name])
    return out


@contextlib.contextmanager
def official_code(code_dir: Path):
    """The official code importable and runnable here (see the module docstring's shims); cwd a temp dir."""
    if not hasattr(np, "int"):
        np.int = int
    purge_reference_modules()
    sys.modules.update(placeholder_stubs(missing_module_stubs()))
    sys.path.insert(0, str(code_dir))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ssnet_official_") as tmp, contextlib.ExitStack() as stack:
        import torch

        for target, name, value in [(torch.Tensor, "cuda", cuda_noop), (torch.nn.Module, "cuda", cuda_noop),
                                    (shutil, "copytree", lambda *a, **k: None)]:
            stack.enter_context(patched(target, name, value))
        workdir = Path(tmp) / "code"
        workdir.mkdir()
        if (code_dir / "configs").is_dir():
            (workdir / "configs").symlink_to(code_dir / "configs")
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


def run_as_main(script: Path, replacements: dict) -> None:
    """Execute ``script`` as ``__main__`` (as ``runpy.run_path`` does) after the textual ``replacements``
    (each must occur in the source)."""
    source = script.read_text(encoding="utf-8")
    for old, new in replacements.items():
        if old not in source:
            raise RuntimeError(f"{script}: source shim target not found: {old!r}")
        source = source.replace(old, new)
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = module
    try:
        exec(compile(source, str(script), "exec"), module.__dict__)
    finally:
        sys.modules["__main__"] = saved


def official_sample(size: str) -> tuple[dict, int, int]:
    """(the batch as the scripts' loaders give it, labelled batch size, batch size)."""
    import torch

    cfg = CONFIGS[size]
    n_l, batch_size = cfg["labelled"], cfg["labelled"] + cfg["unlabelled"]
    batch = synthetic_batch(cfg, n_l, cfg["unlabelled"])
    label = torch.zeros((batch_size, *cfg["shape"]), dtype=torch.int64 if cfg["dim"] == 3 else torch.uint8)
    label[:n_l] = batch.label  # dtypes of the scripts' ToTensor (3D) / RandomGenerator (2D)
    return {"image": batch.image, "label": label}, n_l, batch_size


class LogLines:
    """``logging.info`` stand-in: passes every call on, and keeps the numbers (``name: value``) of the
    per-iteration lines (those starting with ``iteration``) as ``log/<name>``, the latest value of each."""

    VALUE = re.compile(r"(\w+)\s*:\s*(-?(?:nan|inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?))", re.IGNORECASE)

    def __init__(self, info):
        self.info, self.values = info, {}

    def __call__(self, msg, *args, **kwargs):
        self.info(msg, *args, **kwargs)
        text = str(msg) % args if args else str(msg)
        if text.startswith("iteration"):
            self.values.update({f"log/{name}": float(value) for name, value in self.VALUE.findall(text)})


def assert_finite(logs: dict, what: str) -> None:
    """Every logged value is a finite number."""
    assert logs, f"{what}: nothing logged"
    bad = {k: v for k, v in logs.items() if not math.isfinite(float(v))}
    assert not bad, f"{what}: non-finite logged values {bad}"


def official_train(method: str, size: str, args) -> dict:
    """Run the method's official training script for warmup + repeats + 1 iterations; per-iteration times."""
    import torch
    import torch.utils.data

    spec = OFFICIAL[(method, CONFIGS[size]["dataset"])]
    code_dir = getattr(args, spec.repo)
    sample, n_l, batch_size = official_sample(size)
    n, stamps, lines = args.warmup + args.repeats + 1, [], LogLines(logging.info)
    argv = [spec.script, spec.iterations, str(n), "--labeled_bs", str(n_l), "--batch_size", str(batch_size),
            *spec.argv]
    with official_code(code_dir):
        datasets = importlib.import_module(spec.datasets)
        assert Path(datasets.__file__).resolve().is_relative_to(code_dir), f"{spec.datasets}: {datasets.__file__}"
        with contextlib.ExitStack() as stack:
            for target, name, value in [*((datasets, c, _FakeDataset) for c in DATASET_CLASSES
                                          if hasattr(datasets, c)),
                                        (torch.utils.data, "DataLoader", timed_loader(sample, n, stamps)),
                                        (logging, "info", lines), (sys, "argv", argv)]:
                stack.enter_context(patched(target, name, value))
            run_as_main(code_dir / spec.script, spec.source_shims(CONFIGS[size]["shape"]))
    assert len(stamps) == n, f"{spec.script} asked for {len(stamps)} batches, expected {n}"
    logs = {**_Writer.scalars, **lines.values}
    assert_finite(logs, f"official {spec.script}")
    return {"times": {"iteration": list(np.diff(stamps)[args.warmup:])}, "peak_gb": peak_gb(), "last_logs": logs}


def official_infer(size: str, code_dir: Path, workdir: Path, warmup: int, repeats: int) -> dict:
    """Time the official test function on the prepared volume; save its prediction."""
    import torch

    dataset, geometry = CONFIGS[size]["dataset"], INFERENCE[size]
    inputs = np.load(workdir / f"{size}-input.npz")
    with official_code(code_dir):
        from networks.net_factory import net_factory

        model = net_factory(**NETWORKS[dataset])
        model.load_state_dict(torch.load(workdir / f"{size}-weights.pt"))
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
    """Time our iterations of the run config's method with its execution settings (as ``Trainer.__init__``
    applies them)."""
    from ssnet.allocator import apply_cpu_allocator
    from ssnet.seeding import set_deterministic

    set_deterministic(bool(run_cfg["deterministic"]))
    apply_cpu_allocator(run_cfg)
    layout = "channels-last" if run_cfg["channels_last"] else "default"  # step_time runtime: layout only
    cfg = {**CONFIGS[size], "network": run_cfg["network"]}
    _, method, batch = setup_step(cfg, run_cfg["method_type"], run_cfg["params"], threads, layout)
    steps, out = timed_steps(method, batch, warmup, repeats, 0, run_cfg["training"]["iterations"])
    logs = {key: float(value) for key, value in out.logs.items()}
    assert_finite(logs, f"ours {run_cfg['method']}")
    return {"times": {"iteration": [s["total"] for s in steps]}, "peak_gb": peak_gb(), "last_logs": logs}


def ours_network(run_cfg: dict, weights: Path):
    """The evaluation's network (``evaluation_network``: eval mode, the run's memory layout) with the official
    weights."""
    import torch

    from ssnet.engine.checkpoint import build_method
    from ssnet.evaluation.evaluate import evaluation_network
    from ssnet.networks.reference_names import load_reference_state

    method = build_method(run_cfg)
    load_reference_state(method.network, torch.load(weights), method.heads)
    return evaluation_network(method.eval(), run_cfg, torch.device("cpu"), run_cfg["inference"])


def acdc_margins(network, volume: np.ndarray, size) -> np.ndarray:
    """Per-pixel top-1 minus top-2 softmax probability, mapped to the volume as the label map is (order-0 zooms)."""
    import scipy.ndimage
    import torch

    _, h, w = volume.shape
    out = np.zeros(volume.shape, dtype=np.float32)
    with torch.inference_mode():
        for i, zoomed in enumerate(zoomed_slices(volume, size)):
            logits = network(zoomed[None])[0]
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
    from ssnet.allocator import apply_cpu_allocator

    torch.set_num_threads(threads)
    apply_cpu_allocator(run_cfg)  # as evaluate_run
    dataset, geometry = get_dataset(run_cfg["dataset"]), INFERENCE[size]
    inputs = np.load(workdir / f"{size}-input.npz")
    network = ours_network(run_cfg, workdir / f"{size}-weights.pt")
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
def prepare_inference(workdir: Path, code_dir: Path, sizes: list[str]) -> None:
    """Seeded inputs per size and, per size, the official network's seeded random init with its output
    convolution calibrated on that input (:func:`calibrate_output`), as files."""
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

        for size in sizes:
            dataset = CONFIGS[size]["dataset"]
            torch.manual_seed(SEED)
            model = net_factory(**NETWORKS[dataset]).eval()
            image = np.load(workdir / f"{size}-input.npz")["image"]
            batch = calibration_batch(image, dataset, INFERENCE[size]["patch"])
            means = calibrate_output(model, model.decoder.out_conv, batch)
            print(f"[{size}] official {dataset} init, output conv calibrated: mean class probabilities "
                  + ", ".join(f"{m:.3f}" for m in means), flush=True)
            torch.save(model.state_dict(), workdir / f"{size}-weights.pt")


def calibration_batch(image: np.ndarray, dataset: str, patch: tuple) -> "torch.Tensor":
    """What the network sees of the volume: LA its centre window (1, 1, *patch); ACDC every slice zoomed to the
    patch as ``val_2d`` zooms it, (D, 1, *patch)."""
    return centre_window(image, patch)[None, None] if dataset == "LA" else zoomed_slices(image, patch)


def zoomed_slices(volume: np.ndarray, patch: tuple) -> "torch.Tensor":
    """The slices of ``volume`` (D, H, W) zoomed to ``patch`` as ``val_2d.test_single_volume`` (and our
    ``predict_volume_2d``, through ``zoom_slices``) zoom them, as a float32 (D, 1, *patch) tensor."""
    import torch

    from ssnet.evaluation.inference import zoom_slices

    return torch.from_numpy(zoom_slices(volume, patch).astype(np.float32))[:, None]


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


def parts_of(method: str, args) -> list[str]:
    """The parts measured for ``method``: inference is compared for SS-Net only."""
    return [part for part in args.parts if method == "ssnet" or part == "train"]


def plan(args) -> list[tuple[str, str]]:
    """The (method, size) pairs to measure, in order; a note for each pair skipped."""
    pairs = []
    for method in args.methods:
        for size in args.sizes:
            key = (method, CONFIGS[size]["dataset"])
            if key not in OFFICIAL:
                print(f"skipped: {method} on {size}, no official script ({NO_OFFICIAL[key]})", flush=True)
            elif not parts_of(method, args):
                print(f"skipped: {method} on {size}, inference is compared for ssnet only", flush=True)
            else:
                pairs.append((method, size))
    return pairs


def check_repository(args, dest: str, files: set, users: set) -> None:
    """Resolve the repository option ``dest`` in ``args``; SystemExit naming the option and what is missing."""
    option, name = REPOSITORIES[dest]
    path = getattr(args, dest)
    if path is None:
        sys.exit(f"{option} is required for {', '.join(sorted(users))} (the {name} code/ folder)")
    if not path.is_dir():
        sys.exit(f"{option} {path}: no such directory (expected the {name} code/ folder)")
    missing = sorted(f for f in files if not (path / f).is_file())
    if missing:
        sys.exit(f"{option} {path}: not the {name} code/ folder (missing {', '.join(missing)})")
    setattr(args, dest, path.resolve())


def check_repositories(args, pairs: list[tuple[str, str]]) -> None:
    """Every repository the pairs need (scripts; SS-Net's inference files for ``--parts infer``) and every
    module their loop bodies really need."""
    needed: dict[str, tuple[set, set]] = {}
    for method, size in pairs:
        dataset = CONFIGS[size]["dataset"]
        spec = OFFICIAL[(method, dataset)]
        files, users = needed.setdefault(spec.repo, (set(), set()))
        files.add(spec.script)
        users.add(f"{method} on {dataset}")
        if method == "ssnet" and "infer" in args.parts:
            files.update(INFERENCE_FILES)
        for module in spec.needs:
            if importlib_missing(module):
                sys.exit(f"{method} on {dataset}: the official {spec.script} needs {module} in its loop body, "
                         "not importable here (see the module docstring: PYTHONPATH)")
    for dest, (files, users) in needed.items():
        check_repository(args, dest, files, users)


def describe(run_cfg: dict) -> str:
    """One line: the settings our side runs with (the method's params are in the JSON)."""
    p, allocator = run_cfg["params"], run_cfg["cpu_allocator"]
    execution = "".join(f", {key}={p[key]}" for key in ("staged_backward", "recompute") if key in p)
    infer = run_cfg["inference"]
    inference = (f", inference batch_size={infer['batch_size']} fuse_batchnorm={infer['fuse_batchnorm']}"
                 if run_cfg["method"] == "ssnet" else "")
    return (f"{run_cfg['method']} ({run_cfg['method_label']}) on {run_cfg['dataset']}: channels_last="
            f"{run_cfg['channels_last']}, cpu_allocator library={allocator['library']} (glibc mmap/trim="
            f"{allocator['mmap_threshold_mb']}/{allocator['trim_threshold_mb']} MB), "
            f"deterministic={run_cfg['deterministic']}{execution}, network={run_cfg['network']}{inference}")


def official_name(method: str, size: str, part: str) -> str:
    """What (method, size, part) times on the official side: repository, file (and function)."""
    spec = OFFICIAL[(method, CONFIGS[size]["dataset"])]
    path = spec.script if part == "train" else INFERENCE_OFFICIAL[CONFIGS[size]["dataset"]]
    return f"{REPOSITORIES[spec.repo][1]} code/{path}"


def run_worker(method: str, part: str, side: str, size: str, workdir: Path, args) -> dict:
    """One measurement in a fresh process of this script; its result."""
    from ssnet.allocator import Allocator, preload_environment, wanted_allocator

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    run_cfg = json.loads((workdir / f"settings-{method}-{CONFIGS[size]['dataset']}.json").read_text())
    # ours under the allocator its jobs run (ssnet.jobs.run_job), the official code under glibc as it ships
    env = preload_environment(wanted_allocator(run_cfg["cpu_allocator"]) if side == "ours" else Allocator("glibc"), env)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, part, side, size, str(workdir),
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    for dest, (option, _) in REPOSITORIES.items():
        if getattr(args, dest) is not None:
            cmd += [option, str(getattr(args, dest))]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {method} {part} {size} failed:\n{done.stderr[-3000:]}")
    return json.loads((workdir / f"{method}-{size}-{part}-{side}.json").read_text())


def worker(method: str, part: str, side: str, size: str, workdir: Path, args) -> None:
    """Entry point of a measurement subprocess: writes ``METHOD-SIZE-PART-SIDE.json`` into ``workdir``."""
    import torch

    from ssnet.allocator import describe_allocator, restore_environment

    restore_environment()
    torch.set_num_threads(args.threads)
    run_cfg = json.loads((workdir / f"settings-{method}-{CONFIGS[size]['dataset']}.json").read_text())
    if part == "train":
        result = (official_train(method, size, args) if side == "official"
                  else ours_train(size, run_cfg, args.threads, args.warmup, args.repeats))
    else:
        result = (official_infer(size, args.reference, workdir, args.warmup, args.repeats) if side == "official"
                  else ours_infer(size, run_cfg, args.threads, workdir, args.warmup, args.repeats))
    (workdir / f"{method}-{size}-{part}-{side}.json").write_text(json.dumps({**result, "malloc": describe_allocator()}))


def measure(method: str, part: str, size: str, workdir: Path, args) -> dict:
    """``--rounds`` alternating official / ours measurements of one (method, part, size), pooled."""
    pooled = {side: {"times": {}, "peak_gb": []} for side in SIDES}
    for r in range(args.rounds):
        for side in SIDES:
            result = run_worker(method, part, side, size, workdir, args)
            for key, values in result["times"].items():
                pooled[side]["times"].setdefault(key, []).extend(values)
            pooled[side]["peak_gb"].append(result["peak_gb"])
            pooled[side]["last_logs"] = result.get("last_logs")
            pooled[side]["malloc"] = result["malloc"]
            timed = ", ".join(f"{key} {statistics.median(v):.2f} s ({', '.join(f'{t:.2f}' for t in v)})"
                              for key, v in result["times"].items())
            print(f"[{method} {size} {part} round {r + 1}/{args.rounds}] {side}: {timed}; "
                  f"peak {result['peak_gb']:.2f} GB ({result['malloc']})", flush=True)
    out = {"method": method, "size": size, "part": part, "official_code": official_name(method, size, part),
           **pooled, "rows": []}
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
    """Markdown, one table per (method, size)."""
    blocks = []
    for method, size in dict.fromkeys((r["method"], r["size"]) for r in results):
        group = [r for r in results if (r["method"], r["size"]) == (method, size)]
        lines = [f"### {method}, {size} (official: {'; '.join(r['official_code'] for r in group)})", "",
                 "| part | official median s | ours median s | speed-up | official peak GB | ours peak GB "
                 "| peak ratio | official times (s) | ours times (s) | same prediction |",
                 "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
        for r in group:
            check = r.get("check")
            same = "-" if check is None else (
                f"{'yes' if check['ok'] else 'NO'} ({check['differing']} differ, "
                f"{check['differing_not_near_tie']} not near-tie, {check['near_tie']} near-tie"
                + (f", max prob diff {check['max_prob_diff']:.1e}" if "max_prob_diff" in check else "")
                + f"; class counts {'/'.join(map(str, check['class_counts']))})")
            for row in r["rows"]:
                times = [", ".join(f"{t:.2f}" for t in r[side]["times"][row["measure"]]) for side in SIDES]
                lines.append(f"| {r['part']}: {row['measure']} | {row['official_median_s']:.2f} | "
                             f"{row['ours_median_s']:.2f} | {row['speedup']:.2f}x | {r['official_peak_gb']:.2f} | "
                             f"{r['ours_peak_gb']:.2f} | {r['peak_ratio']:.2f} | {times[0]} | {times[1]} | {same} |")
        mallocs = {side: sorted({r[side].get("malloc", "?") for r in group}) for side in SIDES}
        lines += ["", f"malloc: official {'; '.join(mallocs['official'])}; ours {'; '.join(mallocs['ours'])}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def parse_args():
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["ssnet"], choices=METHODS)
    for dest, (option, name) in REPOSITORIES.items():
        parser.add_argument(option, dest=dest, type=Path, help=f"the official {name} code/ folder")
    parser.add_argument("--sizes", nargs="+", default=list(INFERENCE), choices=list(INFERENCE))
    parser.add_argument("--parts", nargs="+", default=["train", "infer"], choices=["train", "infer"],
                        help="infer: SS-Net only")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="overlays on config.yaml for our side (default: none, the default config)")
    parser.add_argument("--worker", nargs=5, metavar=("METHOD", "PART", "SIDE", "SIZE", "WORKDIR"),
                        help=argparse.SUPPRESS)
    return parser.parse_args()


def write_settings(workdir: Path, pairs: list[tuple[str, str]], args) -> dict:
    """Our side's run config per method and dataset: printed, and written for the workers; returned."""
    settings: dict[str, dict] = {}
    source = " + ".join(["config.yaml", *map(str, args.configfile)])
    for method, dataset in dict.fromkeys((m, CONFIGS[s]["dataset"]) for m, s in pairs):
        run_cfg = settings.setdefault(method, {})[dataset] = config_run(method, dataset, args.configfile)
        (workdir / f"settings-{method}-{dataset}.json").write_text(json.dumps(run_cfg))
        print(f"ours, settings of {source}: {describe(run_cfg)}", flush=True)
    return settings


def write_json(args, settings: dict, results: list[dict]) -> None:
    """The settings of our side, the run's options and the results so far, into ``--json``."""
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "methods": args.methods, "threads": args.threads,
                                         "warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds,
                                         "configfiles": list(map(str, args.configfile)), "results": results},
                                        indent=1))


def main() -> None:
    """Measure every (method, size, part) asked for, print the tables; exit 1 when an inference check fails."""
    args = parse_args()
    if args.worker:
        method, part, side, size, workdir = args.worker
        worker(method, part, side, size, Path(workdir), args)
        return
    pairs = plan(args)
    if not pairs:
        sys.exit("nothing to measure (see the notes above)")
    check_repositories(args, pairs)
    results = []
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        workdir = Path(tmp)
        settings = write_settings(workdir, pairs, args)
        infer_sizes = [s for m, s in pairs if m == "ssnet"] if "infer" in args.parts else []
        if infer_sizes:
            prepare_inference(workdir, args.reference, infer_sizes)
        for method, size in pairs:
            for part in parts_of(method, args):
                results.append(measure(method, part, size, workdir, args))
                write_json(args, settings, results)
    print(format_tables(results))
    if not all(r.get("check", {"ok": True})["ok"] for r in results):
        sys.exit("inference predictions differ beyond near-ties (see the table)")


if __name__ == "__main__":
    main()
