"""Running one pipeline job from a Snakemake script: log redirection, readable failures, warnings.

Every failure ends in the job's log (on a cluster the log is all that remains) as one paragraph
naming the rule and the wildcards and giving the reason, followed by the traceback when the cause is
not bad input or configuration; the console shows the paragraph once. Bad input or configuration
(:class:`PipelineError`) is deterministic: a retry of the same job (``attempt`` > 1) stops at once
with the first attempt's paragraph instead of repeating the work (the per-rule ``retries`` in
``rules/*.smk`` retry only the jobs whose failures can be transient: training and evaluation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from ssnet.errors import PipelineError

_CONSOLE: list[TextIO] = []  # the console stream while a job runs (its stderr goes to the log)


@dataclass
class Job:
    """Who is running: the rule, its wildcards and the attempt (1-based) - Snakemake's ``snakemake``."""

    log: str
    rule: str = ""
    wildcards: dict[str, str] = field(default_factory=dict)
    attempt: int = 1

    @classmethod
    def of(cls, smk: Any) -> "Job":
        return cls(smk.log[0], smk.rule, dict(smk.wildcards.items()), int(getattr(smk, "attempt", 1)))

    def describe(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.wildcards.items())
        return f"rule {self.rule}" + (f" ({where})" if where else "") if self.rule else "job"

    @property
    def marker(self) -> Path:
        """Where a deterministic failure is remembered for the retry of the same job."""
        return Path(f"{self.log}.failed")


def usage_path(log: str | Path) -> Path:
    """``<log>.usage.json``: the resources of the forked child that did a job's work in the job server
    (Snakemake's ``benchmark:`` file measures the job process waiting for it; ``ssnet.cost`` reads both)."""
    return Path(f"{log}.usage.json")


def run_job(smk: Any, function: str | Callable[..., Any], *args: Any, allocator: Mapping | None = None,
            **kwargs: Any) -> Any:
    """Call ``function(*args, **kwargs)`` as the job described by Snakemake's ``snakemake`` object.

    A function named ``"package.module:function"`` (what the scripts pass: they import nothing heavy)
    runs in the local job server when one runs under the same allocator (:mod:`ssnet.jobserver`,
    ``job_server: true``), else - and a callable always - in this process. ``allocator``: a
    ``cpu_allocator`` config block; this process is re-executed under it first where it runs another
    (:func:`ssnet.allocator.ensure_allocator`, before torch is imported).
    """
    from ssnet import allocator as memory
    from ssnet import jobserver

    job = Job.of(smk)
    usage_path(job.log).unlink(missing_ok=True)  # written again only if the job server runs this job
    if callable(function):
        return run_logged(job, function, *args, **kwargs)
    try:
        wanted = None if allocator is None else memory.wanted_allocator(allocator)
        code = None if memory.reexecuted() else jobserver.submit(function, dataclasses.asdict(job), args, kwargs, wanted)
        if code is None and wanted is not None:
            memory.ensure_allocator(wanted, required=allocator.get("library") == "jemalloc")
    except PipelineError as exc:
        return run_logged(job, _raise, exc)
    if code is None:
        return run_logged(job, jobserver.resolve(function), *args, **kwargs)
    if code:
        raise SystemExit(code)
    return None


def run_logged(job: Job | str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with stderr (progress lines) going to the job's log (``job`` or a log path).

    :class:`PipelineError`: the paragraph goes to the log and the console, the job exits 1 and a
    retry of it stops at once. Any other exception: the paragraph, then the traceback, go to the
    log; the paragraph to the console; the exception is re-raised (a retry runs again).
    """
    job = Job(job) if isinstance(job, str) else job
    console = sys.stderr
    previous = _previous_failure(job)
    with open(job.log, "w", buffering=1) as log, contextlib.redirect_stderr(log):
        if previous:
            _report(f"{job.describe()} not retried (attempt {job.attempt}): the previous attempt failed on bad "
                    f"input or configuration, which a retry cannot change. {previous}", log, console)
            raise SystemExit(1)
        _CONSOLE.append(console)
        try:
            result = function(*args, **kwargs)
        except PipelineError as exc:
            paragraph = f"ERROR in {job.describe()}: {exc}"
            _report(paragraph, log, console)
            job.marker.write_text(paragraph + "\n")
            raise SystemExit(1) from None
        except SystemExit as exc:  # e.g. the trainer's Preempted, after its checkpoint
            if exc.code not in (0, None):
                _report(f"ERROR in {job.describe()}: stopped: {exc}", log, console)
            raise
        except BaseException as exc:
            _report(f"ERROR in {job.describe()}: {type(exc).__name__}: {exc}".rstrip(": "), log, console)
            traceback.print_exc(file=log)
            raise
        finally:
            _CONSOLE.pop()
    job.marker.unlink(missing_ok=True)
    return result


def _raise(exc: BaseException) -> None:
    raise exc


def warn(message: str) -> None:
    """A warning that may affect results: in the job's log and on the console (once each)."""
    line = f"WARNING: {message}"
    print(line, file=sys.stderr, flush=True)
    if _CONSOLE and _CONSOLE[-1] is not sys.stderr:
        print(line, file=_CONSOLE[-1], flush=True)


def _previous_failure(job: Job) -> str:
    """The paragraph of a deterministic failure of an earlier attempt of this job ('' if none)."""
    if job.attempt <= 1:
        job.marker.unlink(missing_ok=True)
        return ""
    return job.marker.read_text().strip() if job.marker.is_file() else ""


def _report(paragraph: str, log: TextIO, console: TextIO) -> None:
    print(paragraph, file=log, flush=True)
    if console is not log:
        print(paragraph, file=console, flush=True)
