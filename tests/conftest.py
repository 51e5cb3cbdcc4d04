"""Shared fixtures: the golden parity folder (``GOLDEN_DIR`` overrides the project's copy)."""

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    torch.set_num_threads(1)
    yield


# The decoder features of a golden forward are the last of a deep float32 conv stack whose summation order
# depends on the CPU's instruction set: measured up to 2.4e-5 apart (values up to ~1.1) on an AVX-512-less
# Xeon against the golden machine, while the logits stay within 1e-5. A wrong layer differs by >1e-2.
FEATURE_ATOL = 5e-5


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return Path(os.environ.get("GOLDEN_DIR", ROOT / "tests" / "golden"))


@pytest.fixture(scope="session")
def manifest(golden_dir) -> dict:
    return json.loads((golden_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def preprocessed(tmp_path_factory) -> dict:
    """Tiny synthetic LA and ACDC datasets, generated and preprocessed once per test session."""
    from ssnet.data.preprocess import preprocess_dataset
    from ssnet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    settings = {
        "LA": ({"n_cases": 8, "size_xy": [48, 48], "n_slices": 16}, {"min_extent": 32, "seed": 3}),
        "ACDC": ({"n_patients": 6, "n_slices": [3, 4], "size_hw": [40, 48]}, {}),
    }
    out = {}
    for dataset, (synthetic, params) in settings.items():
        raw, splits, pre = root / dataset / "raw", root / dataset / "splits", root / dataset / "pre"
        make_synthetic(dataset, raw, splits, synthetic, seed=3)
        preprocess_dataset(dataset, raw, splits, pre, params=params)
        out[dataset] = pre
    return out


def tiny_run_config(dataset: str, method: str = "supervised", labelled: str = "2", **training) -> dict:
    """A resolved run config for CPU-second training on the ``preprocessed`` fixture data."""
    from ssnet.config import load_config, merge, run_config

    config = load_config([ROOT / "config.yaml"])
    small = {
        "LA": {"network": {"n_filters": 2}, "training": {"patch_size": [32, 32, 16], "batch_labelled_only": 2},
               "inference": {"patch_size": [32, 32, 16], "stride_xy": 16, "stride_z": 8}},
        "ACDC": {"network": {"channels": [2, 4, 8, 16, 32]}, "training": {"patch_size": [32, 32], "batch_labelled": 2,
                 "batch_unlabelled": 2, "batch_labelled_only": 4}, "inference": {"patch_size": [32, 32]}},
    }[dataset]
    small["training"].update({"iterations": 6, "checkpoint_every": 3, "log_every": 3, "num_workers": 0}, **training)
    small["selection"] = {"mode": "last"}
    config["datasets"][dataset] = merge(config["datasets"][dataset], small)
    run = run_config(config, dataset, method, labelled)
    run["training"].update(small["training"])  # over the method's own schedule (e.g. 6,000 iterations)
    return run


PROJECT_FILES = ["Snakefile", "config.yaml", "configs", "rules", "scripts", "envs", "ssnet", "resources", "profiles",
                 "report", "tests/data"]
FAST_DEMO = ["--configfile", "configs/demo.yaml", "tests/data/fast_demo.yaml"]


class KilledAt(Exception):
    """Raised by :func:`kill_at`'s hook: stands for the training process killed after an iteration."""


def kill_at(iteration: int, each=lambda done: None):
    """An ``on_iteration_end`` hook for ``Trainer.fit`` that calls ``each(done)`` and raises
    :class:`KilledAt` once ``iteration`` iterations are done."""
    def hook(done: int) -> None:
        each(done)
        if done == iteration:
            raise KilledAt(iteration)

    return hook


def copy_project(root: Path, *extra: str) -> Path:
    """A clean copy of the workflow's tracked parts (no results, no .snakemake), plus ``extra`` paths."""
    import shutil

    for name in (*PROJECT_FILES, *extra):
        source, target = ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return root


def paper_checkout(root: Path) -> Path:
    """A clean project copy whose config.yaml data folders exist (empty): the paper grid parses."""
    copy_project(root)
    for dataset in ("LA", "ACDC"):
        (root / "data" / dataset).mkdir(parents=True)
    return root


def run_snakemake(cwd: Path, *args: str, timeout: int = 1800):
    """``python -m snakemake ARGS`` in ``cwd``; returns the CompletedProcess (output captured)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo DAG (with the fast test overlay) run once per session in a clean copy: (root, process)."""
    root = copy_project(tmp_path_factory.mktemp("demo_checkout"))
    return root, run_snakemake(root, "all", "--cores", "2", *FAST_DEMO)
