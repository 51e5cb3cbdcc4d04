"""Resume checkpoints, selected-model files and run provenance."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

import ssnet
from ssnet.allocator import describe_allocator
from ssnet.datasets import get_dataset
from ssnet.io import atomic_path
from ssnet.methods.base import Method, get_method_class, parse_params

MODEL_FORMAT = "ssnet-model/1"


def save_torch(path: str | Path, obj: dict) -> None:
    """torch.save, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path) -> dict:
    """torch.load of plain containers and tensors only (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def previous_checkpoint(path: str | Path) -> Path:
    """Where the resume checkpoint before ``path`` is kept (``last.pt`` -> ``last.prev.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_resume_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path``; the file it replaces stays as :func:`previous_checkpoint` until the
    new one is written and read back, so a crash or a bad write never leaves a run without one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_name(f".{path.name}.new")
    try:
        torch.save(state, new)
        load_torch(new)  # verified readable before anything older is given up
        if path.exists():
            os.replace(path, previous_checkpoint(path))
        os.replace(new, path)
    finally:
        new.unlink(missing_ok=True)


def load_resume_checkpoint(path: str | Path, warn: Callable[[str], None]) -> dict | None:
    """The newest readable resume checkpoint: ``path``, else :func:`previous_checkpoint` (with a warning
    naming the unreadable file), else None (a fresh start, with a warning if a file was unreadable)."""
    path = Path(path)
    unreadable = []
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.exists():
            continue
        try:
            state = load_torch(candidate)
        except Exception as exc:  # truncated or corrupt file: any error of the unpickler
            warn(f"resume checkpoint {candidate} is unreadable ({type(exc).__name__}: {str(exc)[:200]})")
            unreadable.append(candidate)
            continue
        if unreadable:
            warn(f"resuming from the previous checkpoint {candidate} instead")
        return state
    if unreadable:
        warn(f"no readable resume checkpoint in {path.parent}: training starts from iteration 0")
    return None


def build_method(run_cfg: dict) -> Method:
    """Instantiate the run's method from its resolved config."""
    cls = get_method_class(run_cfg["method_type"])
    params = parse_params(run_cfg["method_type"], run_cfg["params"], f"methods.{run_cfg['method']}.params")
    return cls(params, get_dataset(run_cfg["dataset"]).spec, run_cfg["network"])


def save_model(path: str | Path, method: Method, run_cfg: dict, seed: int, selected_iteration: int) -> None:
    """The selected weights plus everything needed to rebuild the method for evaluation."""
    state = {k: v.detach().cpu() for k, v in method.state_dict().items()}
    save_torch(path, {"format": MODEL_FORMAT, "run_config": run_cfg, "seed": seed,
                      "selected_iteration": selected_iteration, "state_dict": state})


def load_model(path: str | Path) -> tuple[Method, dict]:
    """Rebuild a trained method (eval mode, CPU) and return it with the saved metadata."""
    saved = load_torch(path)
    if saved.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model file of this pipeline (format {saved.get('format')!r})")
    method = build_method(saved["run_config"])
    method.load_state_dict(saved["state_dict"])
    return method.eval(), saved


def git_commit() -> str:
    """The project's git commit (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    """Versions of the software that can change a result, and the memory allocator (which cannot:
    recorded for the time and memory a run took)."""
    import medpy  # noqa: F401
    import scipy
    import SimpleITK

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ssnet": ssnet.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
        "cuda": str(torch.version.cuda),
        "malloc": describe_allocator(),
    }
