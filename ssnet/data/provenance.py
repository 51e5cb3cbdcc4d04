"""Provenance of a preprocessed dataset: every input file, its SHA-256, and what it produced.

``<out>/manifest.csv`` has one row per input file (images, labels, ``Info.cfg``, released h5 files,
split lists) with the columns of :data:`MANIFEST_COLUMNS`; ``outputs`` lists the files it produced
(paths relative to the preprocessed folder, ``;``-separated). Files that the pipeline ignores
(``lawall.nrrd``, ``desktop.ini``, the ACDC 4D cine files, ...) are not inputs and are not listed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

from ssnet.io import sha256_file

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ["role", "case", "input", "sha256", "bytes", "outputs"]


class Manifest:
    """Collects manifest rows while a dataset is written; hashes each input once."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def add(self, role: str, case: str, path: str | os.PathLike, outputs: Iterable[str]) -> None:
        """Record that input ``path`` (of ``case``) produced ``outputs``; repeated inputs accumulate."""
        key = str(path)
        row = self.rows.get(key)
        if row is None:
            row = {"role": role, "case": case, "input": key, "sha256": sha256_file(path),
                   "bytes": Path(path).stat().st_size, "outputs": []}
            self.rows[key] = row
        row["outputs"] += [o for o in outputs if o not in row["outputs"]]

    def write(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / MANIFEST_NAME
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            for row in self.rows.values():
                writer.writerow({**row, "outputs": ";".join(row["outputs"])})
        return path


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a manifest.csv, ``outputs`` split into a list and ``bytes`` as int."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["outputs"] = [o for o in row["outputs"].split(";") if o]
        row["bytes"] = int(row["bytes"])
    return rows


def add_split_lists(manifest: Manifest, splits_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """Record the split list files that exist in ``splits_dir`` (generated lists have no input)."""
    for name in names:
        src = Path(splits_dir) / f"{name}.list"
        if src.is_file():
            manifest.add("split_list", name, src, [f"splits/{name}.list"])
