"""Preprocessed data for training and evaluation, and the deterministic two-stream batch stream.

The preprocessed layout (written by :mod:`ssnet.data.preprocess`) is the dataset's: its
:meth:`~ssnet.datasets.Dataset.item_path` (training items) and
:meth:`~ssnet.datasets.Dataset.case_path` (evaluation volumes), plus the split lists in ``<root>/splits/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch

from ssnet.datasets import Dataset
from ssnet.errors import ConfigError
from ssnet.seeding import rng_for

Sample = tuple[np.ndarray, np.ndarray]


def read_sample(path: str | Path) -> Sample:
    """(image float32, label uint8) from one preprocessed h5 file."""
    with h5py.File(path, "r") as handle:
        return handle["image"][()].astype(np.float32), handle["label"][()].astype(np.uint8)


@dataclass
class TrainingSplit:
    """Names of the training items of one run, and of its validation volumes, with scan counts."""

    labelled: list[str]
    unlabelled: list[str]
    validation: list[str]
    validation_is_test: bool
    labelled_scans: int
    unlabelled_scans: int


def training_split(root: str | Path, dataset: Dataset, labelled: str, selection: dict) -> TrainingSplit:
    """Labelled/unlabelled items and validation volumes of one run (:meth:`Dataset.training_items`).

    ``best_test`` validates on test.list instead, and is flagged as leakage.
    """
    splits = dataset.read_splits(Path(root) / "splits")
    chosen, rest, validation = dataset.training_items(splits, labelled, selection)
    on_test = selection["mode"] == "best_test"
    return TrainingSplit(chosen, rest, splits["test"] if on_test else validation, on_test,
                         dataset.scan_count(chosen), dataset.scan_count(rest))


def load_training_items(root: str | Path, dataset: Dataset, names: Sequence[str]) -> list[Sample]:
    """The (image, label) of every named training item."""
    return [read_sample(dataset.item_path(root, name)) for name in names]


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
