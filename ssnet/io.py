"""Atomic file output and small I/O helpers.

Every writer in the pipeline goes through :func:`atomic_path` or :func:`atomic_dir` so that a
crash or a failed check never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` on success.

    On any exception the temporary directory is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Write one item per line (split-list format), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


def read_list(path: str | os.PathLike) -> list[str]:
    """Read a split list: one entry per non-empty line, normalised by :func:`normalise_entry` (CRLF
    line ends and UTF-8 byte-order marks are ignored)."""
    entries = (normalise_entry(line) for line in Path(path).read_text(encoding="utf-8-sig").splitlines())
    return [entry for entry in entries if entry]


def normalise_entry(entry: str) -> str:
    """A split-list entry as an ID: byte-order marks and surrounding whitespace removed, then any
    leading ``./`` (or ``.\\``) and trailing ``/`` (or ``\\``): ``" ./ABC/ "`` -> ``"ABC"``."""
    entry = entry.replace("\ufeff", "").strip()
    while entry.startswith(("./", ".\\")):
        entry = entry[2:].lstrip()
    return entry.rstrip("/\\").strip()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
