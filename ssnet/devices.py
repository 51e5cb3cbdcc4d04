"""The training device, decided once when the workflow is parsed (torch-free), and GPU slots per job.

Resolution (:func:`resolve_device`): ``cpu`` and ``cuda`` are taken as given; ``auto`` becomes
``cuda`` when the submit host sees a GPU - ``CUDA_VISIBLE_DEVICES`` when it is set, otherwise the
lines of ``nvidia-smi -L`` - and ``cpu`` otherwise. The result is exported to every job through the
environment (``SSNET_DEVICE``, ``SSNET_GPUS``), so a job never re-decides it; on a SLURM login node
without a GPU, ``device: cuda`` still plans GPU jobs.

Slots (:func:`claim_gpu`): a job that trains or evaluates on ``cuda`` takes the first free slot among
the visible GPUs (``gpu_jobs_per_device`` slots per GPU) by holding an exclusive ``flock`` on
``<lock_dir>/gpu<id>.slot<k>.lock`` for its lifetime (released by the kernel when the process ends,
even after ``kill -9``) and sets its own ``CUDA_VISIBLE_DEVICES`` to that GPU before torch starts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ssnet.errors import ConfigError

DEVICE_ENV, GPUS_ENV, SLOTS_ENV, PINNED_ENV = "SSNET_DEVICE", "SSNET_GPUS", "SSNET_GPU_SLOTS", "SSNET_PINNED_GPU"
_HELD: list = []  # the slot lock of this process, held until it exits


@dataclass(frozen=True)
class DevicePlan:
    """The resolved device of a workflow run and the GPUs the submit host sees (ids and names)."""

    setting: str  # the config value: auto | cpu | cuda
    device: str  # cpu | cuda
    gpus: tuple[str, ...]  # visible GPU ids ("0", "1", ... or UUIDs from CUDA_VISIBLE_DEVICES)
    names: tuple[str, ...]  # one description per GPU (nvidia-smi -L), or the ids
    source: str  # where the GPU list came from

    def describe(self) -> str:
        """One line, e.g. ``device: cuda, 2 GPUs visible: GPU 0: NVIDIA H200, GPU 1: NVIDIA H200``."""
        seen = f"{len(self.gpus)} GPU{'s' if len(self.gpus) != 1 else ''} visible"
        listed = f": {', '.join(self.names)}" if self.names else ""
        setting = f" (device: {self.setting})" if self.setting != self.device else ""
        return f"device: {self.device}{setting}, {seen}{listed} [{self.source}]"


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(GPU ids, descriptions, source): ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        value = environ["CUDA_VISIBLE_DEVICES"].strip()
        ids = tuple(v.strip() for v in value.split(",") if v.strip()) if value not in ("", "-1") else ()
        return ids, tuple(f"GPU {i}" for i in ids), "CUDA_VISIBLE_DEVICES"
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return (), (), "no nvidia-smi on PATH"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return (), (), f"nvidia-smi -L failed: {exc}"
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("GPU ")]
    ids = tuple(line.split(":")[0].removeprefix("GPU ").strip() for line in lines)
    names = tuple(line.split(" (UUID")[0] for line in lines)
    return ids, names, "nvidia-smi -L"


def resolve_device(setting: str, environ: Mapping[str, str] | None = None) -> DevicePlan:
    """The workflow's device: a job inherits its submit host's decision through the environment."""
    environ = os.environ if environ is None else environ
    if environ.get(DEVICE_ENV) in ("cpu", "cuda"):
        gpus = tuple(g for g in environ.get(GPUS_ENV, "").split(",") if g)
        return DevicePlan(setting, environ[DEVICE_ENV], gpus, tuple(f"GPU {g}" for g in gpus), "submit host")
    gpus, names, source = visible_gpus(environ)
    device = setting if setting != "auto" else ("cuda" if gpus else "cpu")
    return DevicePlan(setting, device, gpus, names, source)


def export(plan: DevicePlan, jobs_per_device: int) -> None:
    """Hand the decision to every job (local jobs and batch jobs inherit the environment)."""
    os.environ[DEVICE_ENV] = plan.device
    os.environ[GPUS_ENV] = ",".join(plan.gpus)
    os.environ[SLOTS_ENV] = str(jobs_per_device)


def pin_job(device: str, lock_dir: str | Path = "results/.gpu_slots") -> str | None:
    """Pin this job to a free GPU slot when it runs on ``cuda`` (before torch starts); the GPU id or None.

    A CUDA job that sees no GPU stops here with one paragraph (:func:`no_gpu_message`).
    """
    if device != "cuda":
        return None
    if PINNED_ENV in os.environ:
        return os.environ[PINNED_ENV]
    gpu, slot, handle = claim_gpu(lock_dir, int(os.environ.get(SLOTS_ENV, "1")))
    _HELD.append(handle)
    os.environ[PINNED_ENV] = gpu
    print(f"pinned to GPU {gpu} (slot {slot})", file=sys.stderr)
    return gpu


def pinned_gpu() -> str | None:
    """The GPU this process was pinned to by :func:`pin_job` (recorded in run_info.json)."""
    return os.environ.get(PINNED_ENV)


def gpu_job_limit(plan: DevicePlan, jobs_per_device: int, local: bool, user_set: bool) -> int | None:
    """The global ``gpu`` resource of a workstation run: visible GPUs x ``jobs_per_device``; None (leave
    Snakemake's setting) on CPU, on a cluster executor or when the user passed ``--resources gpu=...``."""
    if plan.device != "cuda" or not plan.gpus or not local or user_set:
        return None
    return len(plan.gpus) * jobs_per_device


def no_gpu_message(device_setting: str, seen: str) -> str:
    return (f"this job was planned for device cuda (config device: {device_setting}) but it sees no GPU "
            f"({seen}). Run it where a GPU is visible (on SLURM: the rule requests gpu=1, check the "
            "partition), or choose the CPU with `--config device=cpu` or `device: cpu` in a config overlay.")


def claim_gpu(lock_dir: str | Path, jobs_per_device: int, environ: Mapping[str, str] | None = None,
              wait_seconds: float = 3600.0, poll_seconds: float = 2.0) -> tuple[str, int, object]:
    """Take a free GPU slot: (GPU id, slot, open lock file to keep alive); sets ``CUDA_VISIBLE_DEVICES``.

    ConfigError when no GPU is visible; waits (printing once) while every slot is taken.
    """
    environ = os.environ if environ is None else environ
    gpus = tuple(g for g in environ.get(GPUS_ENV, "").split(",") if g) or visible_gpus(environ)[0]
    if not gpus:
        raise ConfigError(no_gpu_message(environ.get(DEVICE_ENV, "cuda"), visible_gpus(environ)[2]))
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline, told = time.monotonic() + wait_seconds, False
    while True:
        for slot in range(jobs_per_device):
            for gpu in gpus:
                handle = open(lock_dir / f"gpu{gpu}.slot{slot}.lock", "w")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                os.environ["CUDA_VISIBLE_DEVICES"] = gpu
                return gpu, slot, handle
        if time.monotonic() > deadline:
            raise ConfigError(f"no free GPU slot after {wait_seconds:.0f} s ({len(gpus)} GPUs x "
                              f"{jobs_per_device} slots in {lock_dir}); lower the number of parallel jobs")
        if not told:
            print(f"waiting for a free GPU slot ({len(gpus)} GPUs x {jobs_per_device} slots)", file=sys.stderr)
            told = True
        time.sleep(poll_seconds)
