"""Fork server for local runs: start each job from a warm process instead of a fresh interpreter.

A pipeline job is a Python process that imports torch and the package before doing any work (about 3 s
on a 2-core machine, longer than many demo jobs' work). With ``job_server: true`` the Snakefile starts
one server per workflow run (:func:`start`): it imports the job functions' modules once and then forks
one child per job. The job's own process (Snakemake's script) stays the job for Snakemake - its exit
status, wall time and log - but hands its call to the server (:func:`submit`): the forked child takes the
job's working directory and environment, runs :func:`ssnet.jobs.run_logged` exactly as the job would,
and reports the exit status back. The job forwards SIGTERM / SIGINT / SIGUSR1 to the child, so a
preempted training run still writes its checkpoint; a job process killed outright (SIGKILL) takes its child
with it, as it would its own work, so no job goes on writing outputs that Snakemake has written off.

Nothing changes in what a job computes: every job seeds its own randomness, and the server runs no
torch operation before forking (no thread pool is started in it). Jobs fall back to running in their own
process when no server answers, when it runs another Python environment (``--use-conda``, or a cluster
node that cannot reach it) or another memory allocator than the job asks for (:mod:`ssnet.allocator`; the
server starts under the workflow's ``cpu_allocator``), or when the variable is unset. Snakemake's
``benchmark:`` files record a served job's wall time, but the memory and CPU time of the waiting job
process: the forked child writes its own next to the job's log (``<log>.usage.json``, read by ``ssnet.cost``).

    python -m ssnet.jobserver ADDRESS      # what start() runs; ADDRESS: a Unix socket path
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any, Callable, Mapping

from ssnet import allocator as memory
from ssnet.errors import ConfigError

ADDRESS_VARIABLE = "SSNET_JOB_SERVER"
# What the jobs run (scripts/*.py), imported once by the server.
PRELOAD = ("ssnet.engine.trainer", "ssnet.evaluation.evaluate", "ssnet.report.aggregate", "ssnet.report.provenance",
           "ssnet.data.preprocess", "ssnet.data.fingerprint", "ssnet.data.synthetic", "ssnet.released")
# What those import on first use, imported by the server too where they exist (tests/test_jobserver.py checks
# that a training and an evaluation job import nothing more): torch._dynamo (torch.use_deterministic_algorithms:
# about 800 modules, 1.3 s per job otherwise), torch.save's and the profiler's helpers, SimpleITK (the versions
# in run_info.json), pandas' CSV writer, the datasets' augmentation.
FIRST_USE = ("torch._dynamo", "torch.utils.serialization", "torch.profiler._cupti_monitor", "SimpleITK",
             "pandas.io.formats.csvs", "ssnet.data.augment")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def resolve(name: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"``."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


# ------------------------------------------------------------------------------------------ server
def import_job_modules(modules: tuple[str, ...] = PRELOAD) -> None:
    """Import ``modules`` and, where they exist, the ``FIRST_USE`` modules."""
    for name in modules:
        importlib.import_module(name)
    for name in FIRST_USE:
        with contextlib.suppress(ImportError):  # another torch version may not have it: the jobs import theirs
            importlib.import_module(name)


def serve(address: str, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, listen on the Unix socket ``address`` and fork one child per connection."""
    # Snakemake stops the server, or its death does (_exit_with_parent); not Ctrl-C, should it reach it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    memory.restore_environment()  # started under the workflow's allocator (start()); the jobs' subprocesses not
    _exit_with_parent()
    import_job_modules(preload)
    if os.getppid() != parent:  # the workflow ended while this was importing
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    with Listener(address, family="AF_UNIX") as listener:
        while True:
            connection = listener.accept()
            if os.fork() == 0:
                _child(connection)  # never returns
            connection.close()


def _exit_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent (Snakemake) dies, however it ends (not
    inherited by the forked jobs)."""
    libc = memory.c_library()
    if hasattr(libc, "prctl"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(connection) -> None:
    """Run one job request in this forked process, send its exit status and exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the job may wait for its own subprocesses
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops a job as in its own process
    code = 1
    try:
        request = connection.recv()
        # another Python environment (e.g. a conda env) or allocator: the job runs itself
        if request["prefix"] != sys.prefix or not _runs(request["allocator"]):
            connection.send(None)
            os._exit(0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        connection.send(os.getpid())
        finished = threading.Event()
        threading.Thread(target=_end_with_job_process, args=(connection, finished), daemon=True).start()
        code = _exit_code(lambda: _run(request))
        _write_usage(request["job"]["log"])
        finished.set()
        connection.send(code)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _end_with_job_process(connection, finished: threading.Event) -> None:
    """SIGKILL this child when the job process closes the connection before ``finished`` is set.

    The job process sends nothing after its request, so the read returns only when that process ends; if
    it ended first (killed outright: SIGKILL cannot be forwarded), the job's work stops here too.
    """
    with contextlib.suppress(EOFError, OSError):
        connection.recv_bytes()
    if not finished.is_set():
        os.kill(os.getpid(), signal.SIGKILL)


def _write_usage(log: str) -> None:
    """This forked job's peak resident memory (which counts the server's pages it shares) and CPU time,
    its reaped subprocesses' included, as ``{"max_rss_mb", "cpu_s"}`` in :func:`ssnet.jobs.usage_path`."""
    from ssnet.io import write_json
    from ssnet.jobs import usage_path

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = {"max_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024,  # Linux: kilobytes
             "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime}
    with contextlib.suppress(OSError):  # e.g. the log's folder is gone: the cost report then lacks it
        write_json(usage_path(log), usage)


def _runs(allocator: dict | None) -> bool:
    """Whether the forked jobs run the allocator a job asks for (None: any)."""
    return allocator is None or memory.runs(memory.Allocator(**allocator))


def _run(request: dict) -> None:
    from ssnet.jobs import Job, run_logged

    run_logged(Job(**request["job"]), resolve(request["function"]), *request["args"], **request["kwargs"])


def _exit_code(call: Callable[[], None]) -> int:
    """The exit status a process running ``call()`` would have."""
    try:
        call()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # already reported in the job's log by run_logged
        return 1
    return 0


# ------------------------------------------------------------------------------------------ client
def submit(function: str, job: dict, args: tuple, kwargs: dict,
           allocator: memory.Allocator | None = None) -> int | None:
    """Run ``function(*args, **kwargs)`` as ``job`` in the server; its exit status, or None when no
    usable server answers (the caller then runs the job itself), e.g. one that does not run ``allocator``."""
    address = os.environ.get(ADDRESS_VARIABLE)
    if not address:
        return None
    try:
        connection = Client(address, family="AF_UNIX")
        connection.send({"function": function, "job": job, "args": args, "kwargs": kwargs, "cwd": os.getcwd(),
                         "env": dict(os.environ), "prefix": sys.prefix,
                         "allocator": None if allocator is None else dataclasses.asdict(allocator)})
        pid = connection.recv()
    except (OSError, EOFError):
        return None
    if pid is None:
        return None
    previous = {sig: signal.signal(sig, lambda signum, frame: _forward(pid, signum)) for sig in FORWARDED_SIGNALS}
    try:
        return int(connection.recv())
    except EOFError:  # the child died without reporting (killed)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        connection.close()


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------ workflow
def start(project_root: str | Path, log: Callable[[str], None] = print,
          allocator: Mapping | None = None) -> subprocess.Popen:
    """Start a server for this workflow run and point the jobs it will start at it (environment).
    ``allocator``: the workflow's ``cpu_allocator`` block; the server (and so its jobs) starts under it."""
    address = str(Path(tempfile.gettempdir()) / f"ssnet-jobs-{os.getpid()}.sock")
    Path(address).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(project_root),
                                                                     os.environ.get("PYTHONPATH")])))
    if allocator is not None:
        with contextlib.suppress(ConfigError):  # jemalloc required and missing: each job reports it in its log
            env = memory.preload_environment(memory.wanted_allocator(allocator), env)
    # its own session: a terminal's Ctrl-C or hang-up reaches the jobs' children only through their job processes
    server = subprocess.Popen([sys.executable, "-m", "ssnet.jobserver", address], env=env,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    os.environ[ADDRESS_VARIABLE] = address
    log(f"job server: pid {server.pid}, {address} (jobs start from a warm process; job_server: false turns it off)")
    return server


def stop(server: subprocess.Popen | None) -> None:
    """Stop a server started by :func:`start` and remove its socket."""
    if server is None:
        return
    address = os.environ.pop(ADDRESS_VARIABLE, None)
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
    if address:
        Path(address).unlink(missing_ok=True)


def wait_until_ready(timeout: float = 60.0) -> bool:
    """True once the server of ``$SSNET_JOB_SERVER`` accepts connections (tests; jobs never wait)."""
    address, deadline = os.environ.get(ADDRESS_VARIABLE, ""), time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            Client(address, family="AF_UNIX").close()  # the forked child finds no request and exits
            return True
        except OSError:
            time.sleep(0.1)
    return False


if __name__ == "__main__":
    serve(sys.argv[1])
