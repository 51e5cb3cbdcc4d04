"""Config loading and validation: the shipped configs pass, bad keys fail naming the key."""

import re

import pytest
import yaml

from conftest import ROOT
from ssnet.config import FULL, labelled_values, load_config, run_config, validate_config
from ssnet.errors import ConfigError


@pytest.fixture
def config():
    return load_config([ROOT / "config.yaml"])


def test_shipped_configs_validate():
    base = load_config([ROOT / "config.yaml"])
    demo = load_config([ROOT / "config.yaml", ROOT / "configs" / "demo.yaml"])
    assert base["datasets"]["LA"]["source"] == "raw"
    assert demo["datasets"]["LA"]["source"] == "synthetic"
    assert base["datasets"]["LA"]["training"]["iterations"] == 15000
    assert base["datasets"]["ACDC"]["training"]["iterations"] == 30000


@pytest.mark.parametrize(
    "path, key",
    [
        (("seedz",), "seedz"),
        (("datasets", "LA", "training", "learning_rate"), "datasets.LA.training.learning_rate"),
        (("datasets", "ACDC", "selection", "every"), "datasets.ACDC.selection.every"),
    ],
)
def test_unknown_key_is_named(config, path, key):
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = 1
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): " + re.escape(key)):
        validate_config(config)


def test_unknown_method_param_is_named(config):
    config["methods"]["supervised"]["params"]["LA"]["dice_wieght"] = 1.0
    with pytest.raises(ConfigError, match=r"dice_wieght.*methods\.supervised\.params\.LA"):
        validate_config(config)


def test_wrong_type_names_key(config):
    config["datasets"]["LA"]["training"]["iterations"] = "many"
    with pytest.raises(ConfigError, match=r"datasets\.LA\.training\.iterations"):
        validate_config(config)


def test_method_without_block(config):
    config["datasets"]["LA"]["methods"] = ["supervised", "nonexistent"]
    with pytest.raises(ConfigError, match="nonexistent"):
        validate_config(config)


def test_la_best_val_needs_validation_cases(config):
    config["datasets"]["LA"]["selection"]["mode"] = "best_val"
    with pytest.raises(ConfigError, match="validation_cases"):
        validate_config(config)


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config([bad])


def test_run_config_merges_method_overrides(config):
    run = run_config(config, "ACDC", "supervised", "3")
    assert run["training"]["lr_policy"] == "poly"  # method override
    assert run["training"]["iterations"] == 30000  # dataset value
    assert run["params"] == {"ce_weight": 0.5, "dice_weight": 0.5}
    assert labelled_values(config, "LA", "supervised") == ["4", "8", FULL]


def test_schema_file_is_yaml():
    schema = yaml.safe_load((ROOT / "ssnet" / "config.schema.yaml").read_text())
    assert schema["additionalProperties"] is False


def test_uniform_schedule_profile_drops_method_schedules(config):
    config["schedule_profile"] = "uniform"
    run = run_config(config, "ACDC", "supervised", "3")
    assert run["training"]["lr_policy"] == "constant" and run["schedule_profile"] == "uniform"


def test_method_can_restrict_its_labelled_counts(config):
    config["methods"]["ssnet_no_sep"]["labelled"] = {"LA": [8]}
    validate_config(config)
    assert labelled_values(config, "LA", "ssnet_no_sep") == ["8"]
    assert labelled_values(config, "ACDC", "ssnet_no_sep") == ["3", "7"]
