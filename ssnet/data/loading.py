"""Preprocessed data for training and evaluation, and the deterministic two-stream batch stream.

Preprocessed layout (written by :mod:`ssnet.data.preprocess`):
``<root>/cases/<ID>.h5`` (LA), ``<root>/slices/<vol>_slice_K.h5`` and ``<root>/volumes/<vol>.h5``
(ACDC), and the split lists in ``<root>/splits/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch

from ssnet.config import FULL
from ssnet.data.splits import labelled_cases_la, labelled_slices_acdc, patients_of, read_splits
from ssnet.errors import ConfigError
from ssnet.seeding import rng_for

Sample = tuple[np.ndarray, np.ndarray]


def read_sample(path: str | Path) -> Sample:
    """(image float32, label uint8) from one preprocessed h5 file."""
    with h5py.File(path, "r") as handle:
        return handle["image"][()].astype(np.float32), handle["label"][()].astype(np.uint8)


def case_path(root: str | Path, dataset: str, name: str) -> Path:
    """Path of an evaluation/validation volume (LA case or ACDC volume)."""
    root = Path(root)
    return root / "cases" / f"{name}.h5" if dataset == "LA" else root / "volumes" / f"{name}.h5"


def slice_path(root: str | Path, name: str) -> Path:
    return Path(root) / "slices" / f"{name}.h5"


@dataclass
class TrainingSplit:
    """Names of the training items of one run, and of its validation volumes."""

    labelled: list[str]
    unlabelled: list[str]
    validation: list[str]
    validation_is_test: bool = False

    @property
    def labelled_scans(self) -> int:
        """Labelled scans: LA cases, or ACDC patients (whose slices are the items)."""
        return _scan_count(self.labelled)

    @property
    def unlabelled_scans(self) -> int:
        return _scan_count(self.unlabelled)


def _scan_count(names: Sequence[str]) -> int:
    return len(patients_of(names)) if names and "_slice_" in names[0] else len(names)


def training_split(root: str | Path, dataset: str, labelled: str, selection: dict) -> TrainingSplit:
    """Labelled/unlabelled item names (LA cases or ACDC slices) and validation volumes of one run.

    LA validation (best_val): the last ``validation_cases`` of train.list, removed from the
    unlabelled pool. ``best_test`` validates on test.list and is flagged as leakage.
    """
    splits = read_splits(Path(root) / "splits", dataset)
    train = splits["train"]
    if dataset == "LA":
        n_val = int(selection.get("validation_cases", 0)) if selection["mode"] == "best_val" else 0
        pool = train[: len(train) - n_val]
        validation = train[len(train) - n_val :]
        chosen = list(pool) if labelled == FULL else labelled_cases_la(pool, int(labelled))
        rest = [c for c in pool if c not in set(chosen)]
    else:
        slices = splits["train_slices"]
        n_patients = len(patients_of(train)) if labelled == FULL else int(labelled)
        chosen = labelled_slices_acdc(slices, train, n_patients)
        rest = [s for s in slices if s not in set(chosen)]
        validation = splits["val"]
    if selection["mode"] == "best_test":
        validation = splits["test"]
    return TrainingSplit(chosen, rest, validation, selection["mode"] == "best_test")


def load_training_items(root: str | Path, dataset: str, names: Sequence[str]) -> list[Sample]:
    path_of = (lambda n: case_path(root, dataset, n)) if dataset == "LA" else (lambda n: slice_path(root, n))
    return [read_sample(path_of(name)) for name in names]


class BatchStream(torch.utils.data.Dataset):
    """Item ``t`` is the batch of training iteration ``t``: labelled samples, then unlabelled ones.

    Two-stream sampling (protocol §4) made stateless: epoch ``e`` visits the labelled items in the
    permutation drawn from (seed, "labelled", e), ``len(labelled) // batch_labelled`` batches per
    epoch; the unlabelled items follow fresh permutations (seed, "unlabelled", e, pass) within the
    epoch. Augmentation draws come from (seed, "augment", t, slot). Hence any iteration's batch is
    reproducible on its own, which makes resume exact and worker processes irrelevant.
    """

    def __init__(
        self,
        labelled: Sequence[Sample],
        unlabelled_images: Sequence[np.ndarray],
        batch_labelled: int,
        batch_unlabelled: int,
        seed: int,
        augment: Callable,
        iterations: int,
        start: int = 0,
    ):
        if len(labelled) < batch_labelled:
            raise ConfigError(
                f"{len(labelled)} labelled items cannot fill a labelled batch of {batch_labelled}: "
                "lower training.batch_labelled(_only) or label more data"
            )
        if batch_unlabelled and not unlabelled_images:
            raise ConfigError("the method needs unlabelled data but every training item is labelled")
        self.labelled, self.unlabelled = list(labelled), list(unlabelled_images)
        self.batch_labelled, self.batch_unlabelled = batch_labelled, batch_unlabelled
        self.seed, self.augment = seed, augment
        self.iterations, self.start = iterations, start
        self.batches_per_epoch = len(self.labelled) // batch_labelled

    def __len__(self) -> int:
        return self.iterations - self.start

    def labelled_indices(self, t: int) -> np.ndarray:
        epoch, k = divmod(t, self.batches_per_epoch)
        order = rng_for(self.seed, "labelled", epoch).permutation(len(self.labelled))
        return order[k * self.batch_labelled : (k + 1) * self.batch_labelled]

    def unlabelled_indices(self, t: int) -> np.ndarray:
        epoch, k = divmod(t, self.batches_per_epoch)
        n = len(self.unlabelled)
        positions = np.arange(k * self.batch_unlabelled, (k + 1) * self.batch_unlabelled)
        passes = positions // n
        orders = {p: rng_for(self.seed, "unlabelled", epoch, int(p)).permutation(n) for p in np.unique(passes)}
        return np.array([orders[p][pos % n] for p, pos in zip(passes, positions)], dtype=np.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.start + index
        images, labels = [], []
        for slot, i in enumerate(self.labelled_indices(t)):
            image, label = self.augment(*self.labelled[i], rng_for(self.seed, "augment", t, slot))
            images.append(image)
            labels.append(label)
        if self.batch_unlabelled:
            for slot, i in enumerate(self.unlabelled_indices(t), start=self.batch_labelled):
                image, _ = self.augment(self.unlabelled[i], None, rng_for(self.seed, "augment", t, slot))
                images.append(image)
        image = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        label = torch.from_numpy(np.stack(labels).astype(np.int64))
        return image, label
