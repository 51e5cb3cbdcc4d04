"""The CPU memory allocator of training and evaluation processes (``cpu_allocator`` in the config).

Same results whichever allocator runs (PyTorch aligns its buffers itself); what changes is time and
resident memory. An SS-Net training iteration frees and allocates the same few hundred MiB-sized
activation buffers every iteration:

- glibc malloc with its default thresholds serves them with ``mmap`` and returns them on free, so every
  iteration page-faults its activations back in (slow); with the thresholds raised (``mmap_threshold_mb``
  / ``trim_threshold_mb``, applied with ``mallopt`` when the job starts) freed buffers stay in the heap
  and are reused (fast), but the heap fragments: resident memory ~1.8x the live peak at LA paper size.
- jemalloc (``library: jemalloc``, or ``auto`` where its library is installed) reuses them without that
  fragmentation: as fast as raised glibc thresholds at ~0.6x glibc's resident peak (benchmarks/README.md).
  ``jemalloc_decay_ms: -1`` (its ``dirty_decay_ms`` / ``muzzy_decay_ms``) keeps freed pages for reuse;
  jemalloc's default (purge after 10 s) halves the speed of an LA paper-size iteration.

jemalloc replaces malloc only when loaded before the program starts (``LD_PRELOAD``), so a job process
that should run it and does not re-executes itself once with ``LD_PRELOAD`` / ``MALLOC_CONF`` set
(:func:`ensure_allocator`, called by :func:`ssnet.jobs.run_job` before it imports torch) and then puts
both variables back, so that the job's own subprocesses (git, ...) run as they would have. The job
server (:mod:`ssnet.jobserver`) is started under the workflow's allocator; its forked jobs inherit it.

This module imports nothing heavy: the job scripts use it before torch is loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ssnet import jobs
from ssnet.errors import ConfigError

JEMALLOC_LIBRARY = "libjemalloc.so.2"
# A process re-executed by ensure_allocator carries the replaced variables here (JSON; null = was unset).
REEXEC_VARIABLE = "SSNET_ALLOCATOR_REEXEC"
PRELOAD_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF")
MALLOPT_OPTIONS = {"M_MMAP_THRESHOLD": -3, "M_TRIM_THRESHOLD": -1}  # glibc <malloc.h>
MAX_THRESHOLD_MB = 2047  # mallopt takes a C int (bytes)
INSTALL_HINT = ("install it (Debian/Ubuntu: apt-get install libjemalloc2; RHEL/Fedora: dnf install jemalloc) "
                "or set cpu_allocator.jemalloc_path")


@dataclass(frozen=True)
class Allocator:
    """What a process should run: ``name`` "jemalloc" (``path`` its library, ``decay_ms`` its purge delay)
    or "glibc"."""

    name: str
    path: str | None = None
    decay_ms: int | None = None

    @property
    def malloc_conf(self) -> str:
        return f"dirty_decay_ms:{self.decay_ms},muzzy_decay_ms:{self.decay_ms}"


@functools.lru_cache(maxsize=None)
def c_library() -> ctypes.CDLL:
    """The process's C library (glibc on Linux), loaded once."""
    return ctypes.CDLL(ctypes.util.find_library("c"))


# ------------------------------------------------------------------------------------------ which one
def jemalloc_search_path() -> list[Path]:
    """Where ``auto`` looks for jemalloc: the system's lib folders (distribution packages), then this Python
    environment's lib/ (e.g. a conda env's)."""
    multiarch = getattr(sys.implementation, "_multiarch", "")
    folders = [Path("/usr/lib") / multiarch] if multiarch else []
    folders += [Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]
    folders += [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    return list(dict.fromkeys(folder / JEMALLOC_LIBRARY for folder in folders))


def wanted_allocator(block: Mapping) -> Allocator:
    """The allocator a ``cpu_allocator`` config block asks for on this machine.

    ``library``: ``glibc``; ``jemalloc`` (ConfigError when its library is not found); ``auto``: jemalloc
    where found (``jemalloc_path`` or :func:`jemalloc_search_path`), else glibc.
    """
    library = block.get("library", "glibc")  # run configs saved before the key existed ran glibc
    if library == "glibc":
        return Allocator("glibc")
    explicit = block.get("jemalloc_path")
    if explicit and not Path(explicit).is_file():
        raise ConfigError(f"cpu_allocator.jemalloc_path: {explicit} is not a file")
    found = Path(explicit) if explicit else find_jemalloc()
    if found is None:
        if library == "jemalloc":
            raise ConfigError(f"cpu_allocator.library is jemalloc but {JEMALLOC_LIBRARY} is in none of "
                              f"{', '.join(str(p.parent) for p in jemalloc_search_path())}: {INSTALL_HINT}, "
                              "or use library: auto (glibc where jemalloc is missing)")
        return Allocator("glibc")
    return Allocator("jemalloc", str(found), int(block.get("jemalloc_decay_ms", -1)))


def missing_jemalloc_notice(block: Mapping) -> str | None:
    """For ``library: auto`` on a machine without jemalloc: one line saying that the jobs run glibc and
    what that costs; None where jemalloc is found, named by ``jemalloc_path``, or not asked for."""
    if block.get("library", "glibc") != "auto" or block.get("jemalloc_path") or find_jemalloc():
        return None
    return (f"cpu_allocator: {JEMALLOC_LIBRARY} not found, jobs run glibc malloc - {INSTALL_HINT}. Under glibc "
            "kept activations cost more resident memory: short of memory, set "
            "methods.ssnet.params.<dataset>.recompute: all (README: CPU speed and memory)")


def find_jemalloc() -> Path | None:
    """The first :func:`jemalloc_search_path` entry that exists (None: not installed)."""
    return next((path for path in jemalloc_search_path() if path.is_file()), None)


def active_allocator() -> Allocator:
    """The allocator this process runs (jemalloc: its path unknown, its ``dirty_decay_ms`` as set)."""
    if not hasattr(ctypes.CDLL(None), "mallctl"):
        return Allocator("glibc")
    return Allocator("jemalloc", None, _mallctl_ssize("opt.dirty_decay_ms"))


def runs(wanted: Allocator) -> bool:
    """Whether this process already runs ``wanted`` (for jemalloc: with its decay setting)."""
    active = active_allocator()
    return active.name == wanted.name and active.decay_ms == wanted.decay_ms


def describe_allocator() -> str:
    """One line for logs and run_info.json, e.g. ``jemalloc 5.3.0-0-g54eaed1d (dirty_decay_ms -1)``."""
    active = active_allocator()
    if active.name == "jemalloc":
        version = ctypes.c_char_p()
        _mallctl_read("version", version)
        return f"jemalloc {version.value.decode()} (dirty_decay_ms {active.decay_ms})"
    libc = c_library()
    if not hasattr(libc, "gnu_get_libc_version"):
        return "the C library's malloc"
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return f"glibc {libc.gnu_get_libc_version().decode()} malloc"


def _mallctl_read(name: str, value: ctypes._SimpleCData) -> None:
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if ctypes.CDLL(None).mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)):
        raise OSError(f"jemalloc mallctl({name!r}) failed")


def _mallctl_ssize(name: str) -> int:
    value = ctypes.c_ssize_t()
    _mallctl_read(name, value)
    return value.value


# ------------------------------------------------------------------------------------------ switching
def preload_environment(wanted: Allocator, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a process that should start under ``wanted``: jemalloc first in ``LD_PRELOAD`` with
    ``MALLOC_CONF`` (after any of the user's options, so ours win), or no jemalloc in ``LD_PRELOAD``; the
    replaced values kept in ``REEXEC_VARIABLE`` for :func:`restore_environment`."""
    env = dict(environ)
    env[REEXEC_VARIABLE] = json.dumps({name: environ.get(name) for name in PRELOAD_VARIABLES})
    preload = [entry for entry in environ.get("LD_PRELOAD", "").replace(":", " ").split()
               if "jemalloc" not in Path(entry).name]
    if wanted.name == "jemalloc":
        preload.insert(0, str(wanted.path))
        env["MALLOC_CONF"] = ",".join(filter(None, [environ.get("MALLOC_CONF"), wanted.malloc_conf]))
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    return env


def reexecuted() -> bool:
    """Whether this process is :func:`ensure_allocator`'s re-execution (until :func:`restore_environment`)."""
    return REEXEC_VARIABLE in os.environ


def restore_environment() -> bool:
    """Undo :func:`preload_environment` in ``os.environ`` (the process has loaded what it needed); whether
    this process was started that way."""
    saved = os.environ.pop(REEXEC_VARIABLE, None)
    if saved is None:
        return False
    for name, value in json.loads(saved).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return True


def ensure_allocator(wanted: Allocator, required: bool = False, warn: Callable[[str], None] | None = None) -> None:
    """Make this process run ``wanted``: returns when it does, else re-executes the process (same
    interpreter and arguments) with :func:`preload_environment`. If the re-executed process still runs
    another allocator (the library could not be preloaded): ConfigError when ``required``, else ``warn``
    (default: :func:`ssnet.jobs.warn`)."""
    reexecuted = restore_environment()
    if runs(wanted):
        return
    if reexecuted:
        message = (f"cpu_allocator: {wanted.name} {wanted.path or ''} could not be loaded at process start; "
                   f"this job runs {describe_allocator()}")
        if required:
            raise ConfigError(message)
        (warn or jobs.warn)(message)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, preload_environment(wanted, os.environ))


# ------------------------------------------------------------------------------------------ glibc
def configure_malloc(mmap_threshold_mb: int | None, trim_threshold_mb: int | None,
                     warn: Callable[[str], None] = print) -> dict[str, int]:
    """Set glibc's mmap and trim thresholds (MiB; None leaves that one at glibc's default).

    Returns the settings applied, in bytes. Where the C library has no ``mallopt`` (not glibc), calls
    ``warn`` and applies nothing; raises ConfigError for a value glibc refuses or out of range.
    """
    wanted = {"M_MMAP_THRESHOLD": ("mmap_threshold_mb", mmap_threshold_mb),
              "M_TRIM_THRESHOLD": ("trim_threshold_mb", trim_threshold_mb)}
    wanted = {name: (key, mb) for name, (key, mb) in wanted.items() if mb is not None}
    if not wanted:
        return {}
    libc = c_library()
    if not hasattr(libc, "mallopt"):
        warn("cpu_allocator: this C library has no mallopt (not glibc); the thresholds are not applied")
        return {}
    applied = {}
    for name, (key, mb) in wanted.items():
        if not 0 <= mb <= MAX_THRESHOLD_MB:
            raise ConfigError(f"cpu_allocator.{key} must be between 0 and {MAX_THRESHOLD_MB}, got {mb}")
        if libc.mallopt(ctypes.c_int(MALLOPT_OPTIONS[name]), ctypes.c_int(mb << 20)) != 1:
            raise ConfigError(f"cpu_allocator.{key}: glibc mallopt refused {mb} MiB")
        applied[name] = mb << 20
    return applied


def apply_cpu_allocator(run_cfg: Mapping, report: Callable[[str], None] = print) -> dict[str, int]:
    """At the start of a training or evaluation job: under glibc, :func:`configure_malloc` with the run
    config's thresholds; under jemalloc nothing to set. ``report`` gets one line naming the allocator
    (and a warning where the config asked for jemalloc and this process runs glibc: jemalloc is loaded
    at process start by :func:`ssnet.jobs.run_job`, not by a training called from Python)."""
    block = run_cfg["cpu_allocator"]
    if active_allocator().name == "jemalloc":
        report(f"memory allocator: {describe_allocator()}")
        return {}
    if block.get("library") == "jemalloc":
        report("WARNING: cpu_allocator.library is jemalloc, but this process was started with glibc malloc "
               "(jemalloc is loaded at process start by the pipeline's jobs); glibc thresholds applied")
    applied = configure_malloc(block["mmap_threshold_mb"], block["trim_threshold_mb"], report)
    thresholds = ", ".join(f"{name} {value >> 20} MiB" for name, value in applied.items()) or "default thresholds"
    report(f"memory allocator: {describe_allocator()} ({thresholds})")
    return applied
