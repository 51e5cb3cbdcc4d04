"""Loading, validating and resolving the pipeline configuration.

``load_config`` merges YAML files (later files override earlier ones, recursively), validates the
result against ``config.schema.yaml`` and the methods' own parameter dataclasses, and raises
:class:`ConfigError` naming the offending key. ``run_config`` resolves the one dictionary a training
or evaluation job needs; the Snakemake rules pass it as ``params`` so any change reruns the job.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from ssnet.errors import ConfigError
from ssnet.methods.base import DatasetSpec, parse_params

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
DATASET_SPECS = {"LA": DatasetSpec("LA", dim=3, n_classes=2), "ACDC": DatasetSpec("ACDC", dim=2, n_classes=4)}
FULL = "all"  # the labelled wildcard value meaning "every training case labelled"


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; values of ``override`` win, lists are replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(paths: Iterable[str | Path]) -> dict:
    """Read, merge and validate YAML config files."""
    config: dict = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        config = merge(config, data)
    return validate_config(config)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
        return f"unknown config key(s): {keys} (allowed here: {', '.join(allowed)})"
    return f"config key {where}: {error.message}"


def validate_config(config: dict) -> dict:
    """Validate against the JSON schema, then cross-check datasets, methods and their params."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        raise ConfigError("; ".join(_describe(e) for e in errors[:5]))
    for dataset, block in config["datasets"].items():
        _check_dataset(config, dataset, block)
    for name, block in config["methods"].items():
        for dataset in block.get("params", {}):
            parse_params(block["type"], block["params"][dataset], f"methods.{name}.params.{dataset}")
    return config


def _check_dataset(config: dict, dataset: str, block: dict) -> None:
    for method in block["methods"]:
        if method not in config["methods"]:
            raise ConfigError(
                f"datasets.{dataset}.methods lists '{method}', which has no block under methods "
                f"(defined: {sorted(config['methods'])})"
            )
    if block["source"] == "raw" and not block.get("raw_dir"):
        raise ConfigError(f"datasets.{dataset}.raw_dir is required when source is raw")
    selection = block["selection"]
    if dataset == "LA" and selection["mode"] == "best_val" and not selection.get("validation_cases"):
        raise ConfigError(
            "datasets.LA.selection.mode is best_val but datasets.LA.selection.validation_cases is 0: "
            "LA has no validation list; carve one from train.list by setting validation_cases > 0"
        )


def enabled_datasets(config: dict) -> list[str]:
    return [d for d, block in config["datasets"].items() if block.get("enabled", True)]


def labelled_values(config: dict, dataset: str, method: str) -> list[str]:
    """Labelled wildcard values of one method on one dataset (``all`` = full supervision)."""
    block = config["datasets"][dataset]
    counts = config["methods"][method].get("labelled", {}).get(dataset, block["labelled"])
    values = [str(n) for n in counts]
    method_type = config["methods"][method]["type"]
    if block.get("full_supervision", True) and method_type == "supervised":
        values.append(FULL)
    return values


def run_config(config: dict, dataset: str, method: str, labelled: str) -> dict:
    """Everything one training/evaluation job of (dataset, method, labelled) depends on."""
    data = config["datasets"][dataset]
    block = config["methods"][method]
    params = parse_params(block["type"], block.get("params", {}).get(dataset), f"methods.{method}.params.{dataset}")
    return {
        "dataset": dataset,
        "method": method,
        "method_type": block["type"],
        "method_label": block.get("label", {}).get(dataset, method),
        "labelled": labelled,
        "params": dataclasses.asdict(params),
        "network": data["network"],
        "training": merge(data["training"], _schedule_override(config, block, dataset)),
        "schedule_profile": config.get("schedule_profile", "reference"),
        "selection": data["selection"],
        "inference": merge(data["inference"], block.get("inference", {}).get(dataset, {})),
        "device": config["device"],
        "amp": config.get("amp", False),
        "cudnn_benchmark": config.get("cudnn_benchmark", False),
        "deterministic": config.get("deterministic", True),
        "channels_last": config.get("channels_last", False),
        "cpu_allocator": config.get("cpu_allocator", {}),
    }


def _schedule_override(config: dict, method_block: dict, dataset: str) -> dict:
    """A method's own schedule (``reference`` profile) or none (``uniform``: SS-Net's for all)."""
    if config.get("schedule_profile", "reference") == "uniform":
        return {}
    return method_block.get("training", {}).get(dataset, {})


def config_hash(data: Any) -> str:
    """Short stable hash of a JSON-serialisable structure (recorded with every run)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASET_SPECS:
        raise ConfigError(f"unknown dataset '{dataset}'; known: {sorted(DATASET_SPECS)}")
    return DATASET_SPECS[dataset]
