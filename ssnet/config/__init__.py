"""The one resolution stage of the pipeline configuration (torch-free).

``load_config`` reads and merges YAML files (later files override earlier ones, recursively);
``resolve_config`` turns the merged dictionary into the resolved configuration that every other
module indexes without supplying defaults:

1. the JSON schema (``schema.yaml``) checks structure, types and ranges and rejects unknown keys;
2. every default is applied from one place: the schema's ``default:`` values, the network
   declarations (``ssnet/networks/architectures.yaml``), the datasets' ``preprocessing_params`` /
   ``synthetic_params`` and the methods' parameter declarations (``ssnet/methods/<type>.yaml``);
3. method variants are resolved: a block with ``extends: <parent>`` takes the parent's type, labels,
   labelled counts, params, training and inference per dataset and states only what differs;
4. cross-checks that need the dataset and its split lists run (patch dimensionality, architecture,
   class count, labelled counts, validation cases).

Every problem raises one :class:`ConfigError` naming the key, the value and what is allowed.
``run_config`` gives the complete dictionary of one (dataset, method, labelled) run that the rules
pass as ``params``. ``python -m ssnet.config show`` prints either.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from ssnet.config.checks import check_dataset
from ssnet.config.params import check, complete, method_fragment, read_yaml
from ssnet.datasets import get_dataset
from ssnet.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")
ARCHITECTURES_PATH = Path(__file__).resolve().parents[1] / "networks" / "architectures.yaml"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
FULL = "all"  # the labelled wildcard value meaning "every training case labelled"
EVERY_DATASET = "all"  # key of a per-dataset method block that applies to every dataset
PER_DATASET_KEYS = ("params", "labelled", "training", "inference")

__all__ = ["FULL", "ConfigError", "config_hash", "enabled_datasets", "labelled_values", "load_config", "merge",
           "read_config", "resolve_config", "run_config"]


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; values of ``override`` win, lists are replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config(paths: Iterable[str | Path]) -> dict:
    """Read and merge YAML config files (no validation)."""
    config: dict = {}
    for path in paths:
        try:
            data = read_yaml(Path(path)) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
        config = merge(config, data)
    return config


def load_config(paths: Iterable[str | Path]) -> dict:
    """Read, merge and resolve YAML config files."""
    return resolve_config(read_config(paths))


# ------------------------------------------------------------------------------------ resolution
@functools.lru_cache(maxsize=None)
def schema() -> dict:
    return read_yaml(SCHEMA_PATH)


@functools.lru_cache(maxsize=None)
def architectures() -> dict:
    """``{arch: {"dim", "description", "params"}}`` of the segmentation networks."""
    return read_yaml(ARCHITECTURES_PATH)


def resolve_config(config: dict) -> dict:
    """The resolved configuration (see the module docstring); idempotent."""
    for name in config.get("datasets") or {}:
        get_dataset(name)  # an unregistered name first: its block cannot be checked against anything
    check(schema(), config)
    out = apply_defaults(schema(), copy.deepcopy(config), schema())
    for name, block in out["datasets"].items():
        _resolve_dataset(name, block)
    out["methods"] = _resolve_methods(out)
    for name in out["datasets"]:
        check_dataset(out, name, get_dataset(name), run_config)
    return out


def apply_defaults(node_schema: dict, value: Any, root: dict) -> Any:
    """Fill the schema's ``default:`` values into ``value`` (following ``$ref`` and ``allOf``)."""
    if "$ref" in node_schema:
        return apply_defaults(_ref(root, node_schema["$ref"]), value, root)
    for part in node_schema.get("allOf", []):
        value = apply_defaults(part, value, root)
    if not isinstance(value, dict):
        return value
    for key, prop in node_schema.get("properties", {}).items():
        if key not in value and "default" in prop:
            value[key] = copy.deepcopy(prop["default"])
        if key in value:
            value[key] = apply_defaults(prop, value[key], root)
    extra = node_schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(value) - set(node_schema.get("properties", {})):
            value[key] = apply_defaults(extra, value[key], root)
    return value


def _ref(root: dict, ref: str) -> dict:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _resolve_dataset(name: str, block: dict) -> None:
    """Complete a dataset block in place: network, preprocessing and synthetic parameters."""
    dataset = get_dataset(name)
    where = f"datasets.{name}"
    network = dict(block["network"])
    arch = network.pop("arch")
    known = architectures()
    fits = sorted(a for a, spec in known.items() if spec["dim"] == dataset.dim)
    if arch not in known or known[arch]["dim"] != dataset.dim:
        raise ConfigError(f"config key {where}.network.arch = {arch!r} is not allowed: {name} is a "
                          f"{dataset.dim}D dataset, so it must be one of {fits} (ssnet/networks/architectures.yaml)")
    block["network"] = {"arch": arch, **complete(known[arch]["params"], network, f"{where}.network")}
    block["preprocessing"] = complete(dataset.preprocessing_params, block["preprocessing"], f"{where}.preprocessing")
    block["synthetic"] = complete(dataset.synthetic_params, block["synthetic"], f"{where}.synthetic")


def _resolve_methods(config: dict) -> dict:
    """Every method block resolved: type, and per dataset label, labelled, params, training, inference."""
    raw, resolved = config["methods"], {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict:
        if name not in resolved:
            block, parent = raw[name], None
            if "extends" in block:
                parent_name = block["extends"]
                if parent_name in chain + (name,):
                    raise ConfigError(f"methods.{name}.extends: the chain {' -> '.join(chain + (name, parent_name))} "
                                      "is a cycle")
                if parent_name not in raw:
                    raise ConfigError(f"config key methods.{name}.extends = {parent_name!r} is not allowed: it "
                                      f"must name another method block ({', '.join(sorted(raw))})")
                if "type" in block:
                    raise ConfigError(f"methods.{name} states both type and extends: the type comes from "
                                      f"methods.{parent_name}; remove methods.{name}.type")
                parent = resolve(parent_name, chain + (name,))
            elif "type" not in block:
                raise ConfigError(f"methods.{name} needs a type (a method type: ssnet/methods/<type>.yaml) "
                                  "or extends (another method block)")
            resolved[name] = _method_block(config, name, block, parent)
        return resolved[name]

    for name in raw:
        resolve(name, ())
    return {name: resolved[name] for name in raw}


def _per_dataset(block: dict, key: str, name: str, datasets: list[str]) -> dict:
    """``block[key]`` per dataset: ``all`` merged under each dataset's own entry."""
    value = block.get(key, {})
    unknown = sorted(set(value) - set(datasets) - {EVERY_DATASET})
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(f'methods.{name}.{key}.{u}' for u in unknown)} "
                          f"(allowed here: the datasets {', '.join(datasets)}, or {EVERY_DATASET})")
    every = value.get(EVERY_DATASET)
    out = {}
    for dataset in datasets:
        own = value.get(dataset)
        if isinstance(every, dict) or isinstance(own, dict):
            out[dataset] = merge(every or {}, own or {})
        else:
            out[dataset] = own if own is not None else every
    return out


def _method_block(config: dict, name: str, block: dict, parent: dict | None) -> dict:
    """One method block resolved against its parent (if any) and the configured datasets."""
    datasets = list(config["datasets"])
    method_type = parent["type"] if parent else block["type"]
    fragment = method_fragment(method_type)
    label = block.get("label")
    labels = _per_dataset({"label": label if isinstance(label, dict) else {EVERY_DATASET: label}}, "label",
                          name, datasets)
    own = {key: _per_dataset(block, key, name, datasets) for key in PER_DATASET_KEYS}
    out: dict = {"type": method_type, "label": {}, "labelled": {}, "params": {}, "training": {}, "inference": {}}
    for dataset in datasets:
        parent_label = parent["label"][dataset] if parent else name
        out["label"][dataset] = (labels[dataset] or (parent_label if parent else name)).replace("{parent}",
                                                                                              parent_label)
        inherited = parent["labelled"][dataset] if parent else config["datasets"][dataset]["labelled"]
        out["labelled"][dataset] = list(own["labelled"][dataset] or inherited)
        params = merge(parent["params"][dataset] if parent else {}, own["params"][dataset] or {})
        out["params"][dataset] = complete(fragment["params"], params, f"methods.{name}.params.{dataset}")
        for key in ("training", "inference"):
            out[key][dataset] = merge(parent[key][dataset] if parent else {}, own[key][dataset] or {})
    return out


# --------------------------------------------------------------------------------------- queries
def enabled_datasets(config: dict) -> list[str]:
    return [d for d, block in config["datasets"].items() if block["enabled"]]


def labelled_values(config: dict, dataset: str, method: str) -> list[str]:
    """Labelled wildcard values of one method on one dataset (``all`` = full supervision)."""
    block = config["methods"][method]
    values = [str(n) for n in block["labelled"][dataset]]
    if config["datasets"][dataset]["full_supervision"] and block["type"] == "supervised":
        values.append(FULL)
    return values


def run_config(config: dict, dataset: str, method: str, labelled: str) -> dict:
    """Everything one training/evaluation job of (dataset, method, labelled) depends on."""
    data, block = config["datasets"][dataset], config["methods"][method]
    schedule = {} if config["schedule_profile"] == "uniform" else block["training"][dataset]
    return {
        "dataset": dataset,
        "method": method,
        "method_type": block["type"],
        "method_label": block["label"][dataset],
        "labelled": labelled,
        "params": copy.deepcopy(block["params"][dataset]),
        "network": copy.deepcopy(data["network"]),
        "training": merge(data["training"], schedule),
        "schedule_profile": config["schedule_profile"],
        "selection": copy.deepcopy(data["selection"]),
        "inference": merge(data["inference"], block["inference"][dataset]),
        "device": config["device"],
        "amp": config["amp"],
        "cudnn_benchmark": config["cudnn_benchmark"],
        "deterministic": config["deterministic"],
        "channels_last": config["channels_last"],
        "cpu_allocator": copy.deepcopy(config["cpu_allocator"]),
    }


def config_hash(data: Any) -> str:
    """Short stable hash of a JSON-serialisable structure (recorded with every run)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
