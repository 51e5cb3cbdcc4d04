"""Split lists and labelled subsets (protocol section 3).

File conventions (as in the official releases, see ``resources/splits/``):

- LA: ``train.list`` (case IDs, sorted), ``test.list``; optional ``val.list``.
- ACDC: ``train.list``, ``val.list``, ``test.list`` (volume names ``patientNNN_frame01`` / ``frame02``)
  and ``train_slices.list`` (``patientNNN_frame0F_slice_K``, K 1-based, in train.list patient order).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from ssnet.data.checks import check_splits_disjoint
from ssnet.errors import DataError
from ssnet.io import read_list

SPLIT_FILES = {
    "LA": {"required": ("train", "test"), "optional": ("val",)},
    "ACDC": {"required": ("train", "val", "test"), "optional": ("train_slices",)},
}

_PATIENT = re.compile(r"^(patient\d+)(?:_|$)")


def _dataset_key(dataset: str) -> str:
    key = str(dataset).upper()
    if key not in SPLIT_FILES:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(SPLIT_FILES)}")
    return key


def read_splits(splits_dir: str | os.PathLike, dataset: str) -> dict[str, list[str]]:
    """Read ``<name>.list`` files of ``dataset`` from ``splits_dir`` into ``{name: [entries]}``.

    Required lists missing -> DataError naming the file; optional lists are included when present.
    """
    spec = SPLIT_FILES[_dataset_key(dataset)]
    splits_dir = Path(splits_dir)
    out: dict[str, list[str]] = {}
    for name in spec["required"] + spec["optional"]:
        path = splits_dir / f"{name}.list"
        if not path.is_file():
            if name in spec["required"]:
                raise DataError(f"missing split list for {dataset}: {path}")
            continue
        out[name] = read_list(path)
        if name in spec["required"] and not out[name]:
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


def check_disjoint(splits: Mapping[str, Sequence[str]]) -> None:
    """Raise DataError when split lists share an entry (or, for ACDC volumes, a patient)."""
    check_splits_disjoint(splits)


def acdc_slice_names(volume: str, n_slices: int) -> list[str]:
    """``patientNNN_frame0F_slice_K`` for K = 1..n_slices."""
    return [f"{volume}_slice_{k}" for k in range(1, int(n_slices) + 1)]
