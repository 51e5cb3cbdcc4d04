"""Datasets. Every module in this package is imported so its ``@register_dataset`` classes become
available as ``datasets.<name>`` config blocks: a new dataset is one new file here."""

import importlib
import pkgutil

from ssnet.datasets.base import DATASETS, Dataset, DatasetSpec, get_dataset, register_dataset

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "get_dataset", "register_dataset"]
