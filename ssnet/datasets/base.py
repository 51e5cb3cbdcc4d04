"""The dataset interface: everything that differs between datasets, behind one small class.

A dataset is a subclass of :class:`Dataset` registered with ``@register_dataset`` in its own module
under ``ssnet/datasets/`` (every module there is imported, like ``ssnet/methods/``). Importing a
dataset module must not import torch, h5py, SimpleITK or pandas: the workflow reads the class
attributes (dimensionality, classes, split files, parameter declarations) when it is parsed; the
behaviour (reading, preprocessing, sampling, prediction) imports its libraries inside the methods.

Names used below: an *item* is one training sample as stored in the preprocessed folder (an LA
case, an ACDC slice); a *volume* is one evaluation/validation image with its label; a *scan* is
what a labelled count counts (``scan_unit``: an LA case, an ACDC patient).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ssnet.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """What a method needs to know about the data: name, spatial dims (2 or 3), classes, channels."""

    name: str
    dim: int
    n_classes: int
    in_channels: int = 1


class Dataset:
    """One dataset: its description (class attributes) and behaviour (methods).

    Class attributes every dataset sets:

    - ``name``: the key under ``datasets:`` in the config and the ``{dataset}`` wildcard.
    - ``dim``: spatial dimensionality of the training patches (2: slices, 3: volumes).
    - ``class_names``: foreground class names in label order (label 1, 2, ...), short (table headers).
    - ``class_descriptions``: the same classes in words, for table notes.
    - ``architectures``: network ``arch`` values that fit the dataset (``network.arch``); the first
      is the architecture of the authors' released checkpoints.
    - ``scan_unit``: what a labelled count counts, for table headers ("scans", "patients").
    - ``paper_full_labelled``: labelled scans of the paper's full-supervision row (None: unknown).
    - ``split_files``: required and optional split lists (``<name>.list``) of the release.
    - ``qualitative_axis``: the axis of an evaluation volume along which axial slices are taken.
    - ``release_hints``: per ``source`` (raw, preprocessed), what ``raw_dir`` must contain.
    - ``release_globs``: per ``source``, glob patterns (relative to a folder, the first wildcard part is the
      case ID) that recognise the release in a folder, so that a wrong ``raw_dir`` error can say what the
      folder holds instead (:func:`ssnet.data.checks.find_layouts`).
    - ``released_selection``: how the authors chose their released weights (a ``selection.mode``).
    - ``preprocessing_params`` / ``synthetic_params``: the ``datasets.<name>.preprocessing`` and
      ``.synthetic`` blocks, declared as JSON-schema properties with ``default`` and ``description``
      (:mod:`ssnet.config.params`); the config resolution checks them and fills every default.

    Methods marked *dataset-specific* raise NotImplementedError here; a dataset implements them.
    """

    name: ClassVar[str] = ""
    dim: ClassVar[int] = 3
    class_names: ClassVar[tuple[str, ...]] = ()
    class_descriptions: ClassVar[tuple[str, ...]] = ()
    in_channels: ClassVar[int] = 1
    architectures: ClassVar[tuple[str, ...]] = ()
    scan_unit: ClassVar[str] = "scans"
    paper_full_labelled: ClassVar[int | None] = None
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {"required": ("train", "test"), "optional": ()}
    qualitative_axis: ClassVar[int] = 0
    release_hints: ClassVar[dict[str, str]] = {}
    release_globs: ClassVar[dict[str, tuple[str, ...]]] = {}
    released_selection: ClassVar[str] = "best_val"
    preprocessing_params: ClassVar[dict[str, dict]] = {}
    synthetic_params: ClassVar[dict[str, dict]] = {}

    # ------------------------------------------------------------------------------ description
    @property
    def n_classes(self) -> int:
        """Classes including background."""
        return len(self.class_names) + 1

    @property
    def spec(self) -> DatasetSpec:
        """The :class:`DatasetSpec` that methods and networks are built with."""
        return DatasetSpec(self.name, self.dim, self.n_classes, self.in_channels)

    def _missing(self, what: str):
        return NotImplementedError(f"dataset {self.name} does not implement {what}")

    # ---------------------------------------------------------------------------- split lists
    def read_splits(self, splits_dir: str | Path) -> dict[str, list[str]]:
        """``{list name: entries}`` of this dataset's split lists in ``splits_dir`` (DataError when a
        required list is missing or empty; optional lists are included when present)."""
        from ssnet.data.splits import read_splits

        return read_splits(splits_dir, self.split_files)

    def scan_count(self, names: Sequence[str]) -> int:
        """Dataset-specific: how many scans the split-list entries or item names cover."""
        raise self._missing("scan_count")

    def training_items(self, splits: Mapping[str, list[str]], labelled: str,
                       selection: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
        """Dataset-specific: (labelled items, unlabelled items, validation volumes) of a run.

        ``labelled`` is the labelled wildcard (a count of scans, or ``all``); ``selection`` the run's
        selection block (``best_test`` validation is handled by the caller).
        """
        raise self._missing("training_items")

    # ------------------------------------------------------------------- preprocessed folder
    def case_path(self, root: str | Path, name: str) -> Path:
        """Dataset-specific: the h5 file of evaluation/validation volume ``name`` under ``root``."""
        raise self._missing("case_path")

    def item_path(self, root: str | Path, name: str) -> Path:
        """Dataset-specific: the h5 file of training item ``name`` under ``root``."""
        raise self._missing("item_path")

    # ------------------------------------------------------------------------------ training
    def augment(self, image, label, rng, patch: Sequence[int], pad_extra: int):
        """Dataset-specific: the training augmentation of one item.

        ``image`` (and ``label``, or None for an unlabelled item) are arrays of ``dim`` axes; returns
        the augmented pair, both of shape ``patch``. All draws come from the numpy Generator ``rng``.
        """
        raise self._missing("augment")

    def predict_volume(self, network, image, inference: Mapping[str, Any], device):
        """Dataset-specific: the label map (integer array, shape of ``image``) of one evaluation volume.

        ``image`` is a volume as stored by the preprocessing; ``inference`` the run's inference block.
        """
        raise self._missing("predict_volume")

    # ------------------------------------------------------------------------- preprocessing
    def check_inputs(self, raw_dir: str | Path, splits: dict[str, list[str]], params: Mapping[str, Any],
                     source: str) -> list[str]:
        """Dataset-specific: check every listed input of ``source`` (raw, synthetic, preprocessed),
        raising DataError before anything is written; return the warnings.

        May add derived lists to ``splits`` (e.g. a slice list computed from the volume depths).
        """
        raise self._missing("check_inputs")

    def intensity_switch(self, params: Mapping[str, Any]) -> str | None:
        """The config key of the release intensity check when it is on (``preprocessing.check_intensity``),
        else None."""
        on = params.get("check_intensity", True)
        return f"datasets.{self.name}.preprocessing.check_intensity" if on else None

    def write_outputs(self, raw_dir: str | Path, splits: Mapping[str, list[str]], params: Mapping[str, Any],
                      source: str, out: Path, manifest) -> dict[str, int]:
        """Dataset-specific: write the preprocessed layout into ``out``, recording every input in
        ``manifest`` (:class:`ssnet.data.provenance.Manifest`); return counts for the summary."""
        raise self._missing("write_outputs")

    # ----------------------------------------------------------------------------- synthetic
    def make_synthetic(self, raw_dir: str | Path, seed: int, params: Mapping[str, Any]) -> list[str]:
        """Dataset-specific: write a synthetic archive in the raw format (atomic); return its cases."""
        raise self._missing("make_synthetic")

    def synthetic_splits(self, raw_dir: str | Path, seed: int, params: Mapping[str, Any]) -> dict[str, list[str]]:
        """Dataset-specific: the split lists of a synthetic archive (same conventions as the official)."""
        raise self._missing("synthetic_splits")

    def synthetic_split_sizes(self, params: Mapping[str, Any]) -> dict[str, int]:
        """Dataset-specific and torch-free: ``{"train", "val", "test"}`` scan counts of the synthetic
        split lists for complete ``params``; ConfigError when no training scan is left."""
        raise self._missing("synthetic_split_sizes")

    def make_fixture(self, kind: str, out_dir: str | Path, splits_dir: str | Path, seed: int) -> list[str]:
        """Dataset-specific: a miniature release of ``kind`` (raw, preprocessed) with every case of the
        lists in ``splits_dir``, in the real layout (atomic); return its cases."""
        raise self._missing("make_fixture")


DATASETS: dict[str, Dataset] = {}


def register_dataset(cls: type[Dataset]) -> type[Dataset]:
    """Class decorator: make a dataset available under ``datasets.<cls.name>`` in the config."""
    DATASETS[cls.name] = cls()
    return cls


def get_dataset(name: str) -> Dataset:
    """The registered dataset called ``name`` (ConfigError naming the known ones otherwise)."""
    import ssnet.datasets  # noqa: F401  (registers the built-in datasets)

    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; registered datasets: {sorted(DATASETS)} "
                          "(a dataset is a module in ssnet/datasets/, see README 'Adding a dataset')")
    return DATASETS[name]
