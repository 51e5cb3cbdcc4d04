"""The run record ``run_info.json``: one typed record written by training and by the released-checkpoint
import, read by the report and the cost summary (torch-free).

The JSON keys are the field names. Fields after ``run_config`` are optional: a record leaves out
the ones that are None (a trained run has no ``released_*`` keys; an imported checkpoint has no
``resumed_from_iteration``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssnet.errors import DataError
from ssnet.io import write_json


@dataclass
class RunInfo:
    """What one run did, with the resolved run config it was trained (or imported) with."""

    dataset: str
    method: str
    method_type: str  # the method's type, or "released" for an imported checkpoint
    labelled: str  # the labelled wildcard: a count, or "all"
    seed: int
    config_hash: str
    git_commit: str
    versions: dict[str, str]
    device: str
    selection: str  # selection.mode
    test_set_selection: bool  # the weights were chosen on the test list (leakage)
    selected_iteration: int | None
    best_val_dice: float | None
    n_labelled: int  # labelled training items
    n_labelled_scans: int  # labelled scans (the dataset's scan_unit)
    n_unlabelled: int
    n_unlabelled_scans: int
    n_validation: int
    labelled_items: list[str]
    validation_items: list[str]
    train_seconds: float | None  # wall time of the last training attempt
    run_config: dict[str, Any]
    resumed_from_iteration: int | None = None  # train_seconds covers iterations resumed_from..iterations
    released_checkpoint: str | None = None
    released_sha256: str | None = None
    reference_tensors: int | None = None
    head_tensors: int | None = None
    imported_as: str | None = None  # the method type the released weights were loaded into
    gpu: str | None = None  # the GPU slot the job was pinned to (its CUDA_VISIBLE_DEVICES), cuda runs only

    @property
    def is_released(self) -> bool:
        """An imported released checkpoint (nothing was trained)."""
        return self.released_checkpoint is not None

    @property
    def method_label(self) -> str:
        return self.run_config["method_label"]

    @property
    def schedule_profile(self) -> str:
        """The run's schedule profile; records of checkpoints imported before it was stored: reference."""
        return self.run_config.get("schedule_profile", "reference")

    def to_json(self) -> dict[str, Any]:
        """The JSON object: every field, optional ones only when set."""
        optional = {f.name for f in dataclasses.fields(self) if f.default is None}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in optional or v is not None}


@dataclass
class RunOutputs:
    """Files a training run writes (the Snakemake rule's outputs)."""

    model: Path
    train_log: Path
    val_log: Path
    info: Path


def write(path: str | Path, info: RunInfo) -> None:
    """Write ``info`` as ``run_info.json`` (atomically)."""
    write_json(path, info.to_json())


def read(path: str | Path) -> RunInfo:
    """The record in ``path``; DataError naming the file and the missing keys of an incomplete one.
    Keys this version does not know are ignored."""
    data = json.loads(Path(path).read_text())
    fields = dataclasses.fields(RunInfo)
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING]
    if missing:
        raise DataError(f"run record {path} lacks {', '.join(missing)}: rerun the job that wrote it")
    info = RunInfo(**{f.name: data[f.name] for f in fields if f.name in data})
    info.labelled = str(info.labelled)
    return info
