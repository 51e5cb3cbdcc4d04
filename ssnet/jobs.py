"""Running one pipeline job from a Snakemake script: log redirection and readable failures."""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Any, Callable

from ssnet.errors import PipelineError


def run_logged(log_path: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with stderr (progress lines) going to ``log_path``.

    A :class:`PipelineError` (bad data or config) ends the job with its one-line message, written
    both to the log and to the console, instead of a traceback. Any other exception is written to the
    log with its traceback (on a cluster the log is all that remains) and re-raised.
    """
    console = sys.stderr
    with open(log_path, "w", buffering=1) as log, contextlib.redirect_stderr(log):
        try:
            return function(*args, **kwargs)
        except PipelineError as exc:
            message = f"ERROR: {exc}"
            print(message, file=log)
            print(message, file=console)
            raise SystemExit(1) from None
        except Exception:
            traceback.print_exc(file=log)
            raise
