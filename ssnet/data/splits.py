"""Split lists and labelled subsets (protocol section 3).

Which lists a dataset has is its ``split_files`` (:mod:`ssnet.datasets`). File conventions (as in
the official releases, see ``resources/splits/``):

- LA: ``train.list`` (case IDs, sorted), ``test.list``; optional ``val.list``.
- ACDC: ``train.list``, ``val.list``, ``test.list`` (volume names ``patientNNN_frame01`` / ``frame02``)
  and ``train_slices.list`` (``patientNNN_frame0F_slice_K``, K 1-based, in train.list patient order).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from ssnet.data.checks import check_splits_disjoint, path_problem
from ssnet.errors import ConfigError, DataError
from ssnet.io import read_list

_PATIENT = re.compile(r"^(patient\d+)(?:_|$)")
_VOLUME = re.compile(r"^(patient\d+)_frame0([12])$")


def read_splits(splits_dir: str | os.PathLike, split_files: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Read the ``<name>.list`` files of ``split_files`` (a dataset's ``{"required": names, "optional":
    names}``) from ``splits_dir`` into ``{name: [entries]}``.

    Entries are normalised before any comparison (:func:`ssnet.io.read_list`: whitespace, byte-order
    marks, CRLF, a leading ``./`` and a trailing ``/`` removed); an entry that is still a path (``a/b``,
    ``..``) is a DataError naming the file and line. Required lists missing or empty -> DataError naming
    the file; optional lists are included when present; a list that is a directory or a symlink loop
    is named as such.
    """
    splits_dir = Path(splits_dir)
    out: dict[str, list[str]] = {}
    for name in (*split_files["required"], *split_files["optional"]):
        path = splits_dir / f"{name}.list"
        problem = path_problem(path)
        if problem == "missing":
            if name in split_files["required"]:
                raise DataError(f"missing split list {path} (required: "
                                f"{', '.join(f'{n}.list' for n in split_files['required'])})")
            continue
        if problem:
            raise DataError(f"bad split list: {path} {problem}")
        try:
            out[name] = read_list(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"unreadable split list {path}: {exc}") from None
        bad = [e for e in out[name] if "/" in e or "\\" in e or e in (".", "..")]
        if bad:
            raise DataError(f"split list {path} has entries that are paths, not IDs: {', '.join(map(repr, bad[:5]))}")
        if name in split_files["required"] and not out[name]:
            raise DataError(f"split list {path} is empty")
    return out


def labelled_cases_la(train_list: Sequence[str], n: int) -> list[str]:
    """The first ``n`` cases of LA ``train.list`` (the reference's labelled subset)."""
    n = int(n)
    if not 1 <= n <= len(train_list):
        raise ValueError(f"labelled count {n} outside 1..{len(train_list)} (train.list size)")
    return list(train_list[:n])


def patient_of(name: str) -> str:
    """``patient012_frame01[_slice_3]`` -> ``patient012``."""
    m = _PATIENT.match(name)
    if not m:
        raise DataError(f"not an ACDC volume or slice name: {name!r}")
    return m.group(1)


def patients_of(volume_names: Sequence[str]) -> list[str]:
    """Patients of a list of ACDC volume/slice names, unique, in order of first appearance."""
    seen: dict[str, None] = {}
    for name in volume_names:
        seen.setdefault(patient_of(name), None)
    return list(seen)


def labelled_slices_acdc(train_slices: Sequence[str], train_list: Sequence[str], n_patients: int) -> list[str]:
    """Slices of the first ``n_patients`` patients of ``train.list``, in ``train_slices`` order.

    With the official lists this is a prefix of train_slices.list: 3 -> 68, 7 -> 136, 70 -> 1312.
    """
    patients = patients_of(train_list)
    n = int(n_patients)
    if not 1 <= n <= len(patients):
        raise ValueError(f"labelled patient count {n} outside 1..{len(patients)} (train.list patients)")
    chosen = set(patients[:n])
    return [s for s in train_slices if patient_of(s) in chosen]


def ratio_to_count(r: float, n: int) -> int:
    """Labelled ratio -> count: ``max(1, round(r * n))`` (Python round), capped at ``n``."""
    if not 0 < float(r) <= 1:
        raise ValueError(f"labelled ratio must be in (0, 1], got {r}")
    if n < 1:
        raise ValueError(f"need at least one training case, got n={n}")
    return min(int(n), max(1, round(float(r) * int(n))))


def _fraction_count(fraction: float, n: int) -> int:
    """Entries of ``n`` a split fraction takes: ``max(1, round(fraction * n))``, none for 0."""
    return max(1, round(fraction * n)) if fraction > 0 else 0


def split_counts(n: int, val_fraction: float, test_fraction: float, unit: str, where: str) -> dict[str, int]:
    """``{"train", "val", "test"}`` sizes (in ``unit``) of ``n`` synthetic scans; ConfigError naming
    ``where`` when the fractions leave no training scan."""
    n_val, n_test = _fraction_count(val_fraction, n), _fraction_count(test_fraction, n)
    if n - n_val - n_test < 1:
        raise ConfigError(f"config key {where}: {n} {unit} leave no training {unit} with val_fraction="
                          f"{val_fraction} and test_fraction={test_fraction}; generate more or lower the fractions")
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def check_disjoint(splits: Mapping[str, Sequence[str]]) -> None:
    """Raise DataError when split lists share an entry (or, for ACDC volumes, a patient)."""
    check_splits_disjoint(splits)


def acdc_slice_names(volume: str, n_slices: int) -> list[str]:
    """``patientNNN_frame0F_slice_K`` for K = 1..n_slices."""
    return [f"{volume}_slice_{k}" for k in range(1, int(n_slices) + 1)]


def parse_acdc_volume(name: str) -> tuple[str, int]:
    """``patientNNN_frame0F`` -> (``patientNNN``, F); DataError for another name."""
    m = _VOLUME.match(name)
    if not m:
        raise DataError(f"not an ACDC volume name (patientNNN_frame01/02): {name!r}")
    return m.group(1), int(m.group(2))


def acdc_volumes(splits: Mapping[str, Sequence[str]]) -> list[str]:
    """Every volume of the train, val and test lists, unique, in list order."""
    return list(dict.fromkeys(v for key in ("train", "val", "test") for v in splits[key]))
