"""Cross-checks of one dataset's resolved configuration against the dataset and its split lists.

They run when the workflow is parsed (``snakemake -n``), so a value that cannot work stops the run
before any job starts, with one message naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ssnet.config.params import method_fragment
from ssnet.errors import ConfigError
from ssnet.io import read_list


def check_dataset(config: dict, name: str, dataset, run_config: Callable) -> None:
    """Methods, patches, class count, selection and labelled counts of ``datasets.<name>``."""
    block = config["datasets"][name]
    for method in block["methods"]:
        if method not in config["methods"]:
            raise ConfigError(f"config key datasets.{name}.methods lists {method!r}, which has no block under "
                              f"methods (defined: {', '.join(sorted(config['methods']))})")
    _check_selection(name, block, dataset)
    for method in block["methods"]:
        run = run_config(config, name, method, "1")
        _check_patch(name, "training", run["training"]["patch_size"], dataset.dim, method, config)
        _check_patch(name, "inference", run["inference"]["patch_size"], dataset.dim, method, config)
        _check_binary_only(name, method, config["methods"][method], dataset)
    _check_labelled(config, name, block, dataset)


def _check_patch(name: str, kind: str, patch: list[int], dim: int, method: str, config: dict) -> None:
    if len(patch) == dim:
        return
    override = config["methods"][method][kind][name].get("patch_size")
    key = f"methods.{method}.{kind}.{name}" if override is not None else f"datasets.{name}.{kind}"
    raise ConfigError(f"config key {key}.patch_size = {patch} is not allowed: {name} is a {dim}D dataset, so it "
                      f"must list {dim} sizes")


def _check_binary_only(name: str, method: str, block: dict, dataset) -> None:
    if dataset.n_classes == 2:
        return
    for param, values in method_fragment(block["type"])["binary_only"].items():
        value = block["params"][name][param]
        if value in values:
            raise ConfigError(f"config key methods.{method}.params.{name}.{param} = {value!r} is not allowed: it "
                              f"needs a two-class dataset and {name} has {dataset.n_classes} classes "
                              f"({', '.join(('background',) + dataset.class_names)})")


def _check_selection(name: str, block: dict, dataset) -> None:
    selection = block["selection"]
    has_val_list = "val" in dataset.split_files["required"]
    if selection["mode"] == "best_val" and not has_val_list and not selection["validation_cases"]:
        raise ConfigError(f"config key datasets.{name}.selection.validation_cases = 0 is not allowed with "
                          f"selection.mode best_val: {name} has no validation list, so it must be >= 1 (the last "
                          "N cases of train.list validate and are never labelled)")


def uses_validation_cases(block: dict, dataset) -> int:
    """Training scans the run validates on instead of training (best_val without a val.list)."""
    selection = block["selection"]
    if selection["mode"] == "best_val" and "val" not in dataset.split_files["required"]:
        return selection["validation_cases"]
    return 0


def training_scans(name: str, block: dict, dataset) -> tuple[int, str]:
    """(number of training scans, where that number comes from) of a dataset block."""
    if block["source"] == "synthetic":
        return dataset.synthetic_split_sizes(block["synthetic"])["train"], f"datasets.{name}.synthetic"
    train_list = Path(block["splits_dir"]) / "train.list"
    if not train_list.is_file():
        raise ConfigError(f"config key datasets.{name}.splits_dir = {block['splits_dir']!r} is not allowed: it must "
                          f"be a folder with the split lists ({', '.join(dataset.split_files['required'])}.list); "
                          f"{train_list} is missing")
    return dataset.scan_count(read_list(train_list)), str(train_list)


def _check_labelled(config: dict, name: str, block: dict, dataset) -> None:
    """Every labelled count fits the training list (after validation cases); validation leaves training."""
    total, source = training_scans(name, block, dataset)
    n_val = uses_validation_cases(block, dataset)
    if n_val >= total:
        raise ConfigError(f"config key datasets.{name}.selection.validation_cases = {n_val} is not allowed: "
                          f"{source} gives {total} training {dataset.scan_unit}, so it must be at most {total - 1}")
    pool = total - n_val
    for method in block["methods"]:
        counts = config["methods"][method]["labelled"][name]
        too_many = [n for n in counts if n > pool]
        if too_many:
            key = f"methods.{method}.labelled.{name}" if counts != block["labelled"] else f"datasets.{name}.labelled"
            after = f" ({total} minus {n_val} validation cases)" if n_val else ""
            raise ConfigError(f"config key {key} = {counts} is not allowed: {source} gives {pool} training "
                              f"{dataset.scan_unit}{after}, so each count must be 1..{pool}")
