"""Preprocessed data for training and evaluation, and the deterministic two-stream batch stream.

The preprocessed layout (written by :mod:`ssnet.data.preprocess`) is the dataset's: its
:meth:`~ssnet.datasets.Dataset.item_path` (training items) and
:meth:`~ssnet.datasets.Dataset.case_path` (evaluation volumes), plus the split lists in ``<root>/splits/``.
"""

from __future__ import annotations

import math
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


def training_stream(root: str | Path, dataset: Dataset, split: TrainingSplit, training: dict, seed: int,
                    uses_unlabelled: bool, start: int = 0) -> "BatchStream":
    """The batch stream of one run: its training items read once into memory, the dataset's augmentation
    with ``training.patch_size`` / ``crop_pad_extra``, the method's batch sizes."""
    labelled = load_training_items(root, dataset, split.labelled)
    unlabelled = [image for image, _ in load_training_items(root, dataset, split.unlabelled)] if uses_unlabelled else []
    patch, extra = training["patch_size"], training["crop_pad_extra"]
    return BatchStream(
        labelled, unlabelled,
        training["batch_labelled"] if uses_unlabelled else training["batch_labelled_only"],
        training["batch_unlabelled"] if uses_unlabelled else 0,
        seed, lambda image, label, rng: dataset.augment(image, label, rng, patch, extra),
        training["iterations"], start,
    )


def training_loader(stream: "BatchStream", workers: int, pin_memory: bool,
                    worker_init_fn: Callable[[int], None] | None = None) -> torch.utils.data.DataLoader:
    """The DataLoader of the training loop: one item is one whole batch (``batch_size=None``), in order."""
    return torch.utils.data.DataLoader(stream, batch_size=None, shuffle=False, num_workers=workers,
                                       worker_init_fn=worker_init_fn, pin_memory=pin_memory)


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

    def samples(self, t: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The augmented (image, label) of every slot of iteration ``t``; unlabelled ones carry no label."""
        out = [self.augment(*self.labelled[i], rng_for(self.seed, "augment", t, slot))
               for slot, i in enumerate(self.labelled_indices(t))]
        if self.batch_unlabelled:
            out += [self.augment(self.unlabelled[i], None, rng_for(self.seed, "augment", t, slot))
                    for slot, i in enumerate(self.unlabelled_indices(t), start=self.batch_labelled)]
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image float32 (B_l + B_u, 1, *patch), label int64 (B_l, *patch)), each sample copied once."""
        samples = self.samples(self.start + index)
        shape = samples[0][0].shape
        image = batch_tensor((len(samples), 1, *shape), torch.float32)
        label = batch_tensor((self.batch_labelled, *shape), torch.int64)
        for slot, (sample_image, sample_label) in enumerate(samples):
            image.numpy()[slot, 0] = sample_image
            if slot < self.batch_labelled:
                label.numpy()[slot] = sample_label
        return image, label


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker in shared memory (as torch's default collate
    allocates it), so that handing it to the main process does not copy it."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)
