"""config.yaml against the reference scripts' defaults (resources/reference_defaults/<method>.yaml).

Each table lists, per dataset, every hyper-parameter a method's reference script sets, with the file it
comes from. The resolved run configuration of config.yaml (reference schedule profile, the dataset's
first labelled count) must hold the reference value; an entry marked ``deviation`` (a documented choice
of this pipeline) must differ from it, so that a deviation note cannot outlive the deviation.
"""

import math

import pytest
import yaml

from conftest import ROOT
from ssnet.config import load_config, run_config

TABLES = ROOT / "resources" / "reference_defaults"


def _tables() -> dict[str, dict]:
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(TABLES.glob("*.yaml"))}


def _entries():
    for name, table in _tables().items():
        for i, entry in enumerate(table["entries"]):
            yield pytest.param(table["method"], entry, id=f"{name}-{entry['dataset']}-{entry['key']}-{i}")


def _lookup(run: dict, dotted: str):
    node = run
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted}: no key {part!r} in the resolved run config"
        node = node[part]
    return node


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@pytest.fixture(scope="module")
def config():
    return load_config([ROOT / "config.yaml"])


def test_every_method_type_of_config_yaml_has_a_table(config):
    for name, table in _tables().items():
        assert table["method"] in config["methods"], f"{name}.yaml: unknown method {table['method']!r}"
    covered = {config["methods"][table["method"]]["type"] for table in _tables().values()}
    missing = sorted({block["type"] for block in config["methods"].values()} - covered)
    assert not missing, f"no reference-defaults table for the method types {missing} under {TABLES}"
    for name, table in _tables().items():
        for entry in table["entries"]:
            assert set(entry) <= {"dataset", "key", "value", "source", "deviation"}, entry
            assert entry.get("source"), f"{name}.yaml: entry {entry['key']} names no reference file"


@pytest.mark.parametrize("method,entry", list(_entries()))
def test_config_yaml_follows_the_reference(config, method, entry):
    dataset = entry["dataset"]
    run = run_config(config, dataset, method, str(config["methods"][method]["labelled"][dataset][0]))
    ours = _lookup(run, entry["key"])
    if entry.get("deviation"):
        assert not _same(ours, entry["value"]), (
            f"{method} {dataset} {entry['key']}: marked as a deviation ({entry['deviation']}) but config.yaml "
            f"now holds the reference value {entry['value']!r}")
    else:
        assert _same(ours, entry["value"]), (
            f"{method} {dataset} {entry['key']} = {ours!r} in config.yaml, the reference ({entry['source']}) "
            f"uses {entry['value']!r}")
