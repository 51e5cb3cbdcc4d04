"""The configuration resolution: defaults from one place, method variants, typed values, cross-checks."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, paper_checkout, run_snakemake
from ssnet.config import FULL, labelled_values, load_config, read_config, resolve_config, run_config
from ssnet.config.__main__ import main as config_cli
from ssnet.config.params import method_fragment
from ssnet.errors import ConfigError


@pytest.fixture
def config():
    return load_config([ROOT / "config.yaml"])


@pytest.fixture
def raw():
    """config.yaml merged but not resolved (what Snakemake's ``config`` holds before resolution)."""
    return read_config([ROOT / "config.yaml"])


def _set(node, dotted, value):
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# ------------------------------------------------------------------------------ shipped configs
def test_shipped_configs_validate():
    base = load_config([ROOT / "config.yaml"])
    demo = load_config([ROOT / "config.yaml", ROOT / "configs" / "demo.yaml"])
    assert base["datasets"]["LA"]["source"] == "raw"
    assert demo["datasets"]["LA"]["source"] == "synthetic"
    assert base["datasets"]["LA"]["training"]["iterations"] == 15000
    assert base["datasets"]["ACDC"]["training"]["iterations"] == 30000
    assert load_config([ROOT / "config.yaml", ROOT / "configs" / "benchmark_ssl.yaml"])


def test_cpu_real_preset_scales_the_ramp_up_to_its_schedule():
    """configs/cpu_real.yaml: real ACDC, 7 labelled patients, labelled-only vs SS-Net, 3 seeds, and SS-Net's
    ramp-up shortened in proportion to the schedule (it reaches its maximum at the last iteration)."""
    base = load_config([ROOT / "config.yaml"])
    preset = load_config([ROOT / "config.yaml", ROOT / "configs" / "cpu_real.yaml"])
    assert not preset["datasets"]["LA"]["enabled"] and preset["datasets"]["ACDC"]["source"] == "preprocessed"
    assert len(preset["seeds"]) == 3 and preset["datasets"]["ACDC"]["methods"] == ["supervised", "ssnet"]
    assert [labelled_values(preset, "ACDC", m) for m in ("supervised", "ssnet")] == [["7"], ["7"]]
    runs = {m: run_config(preset, "ACDC", m, "7") for m in ("supervised", "ssnet")}
    paper = run_config(base, "ACDC", "ssnet", "7")
    shortened = runs["ssnet"]["training"]["iterations"] / paper["training"]["iterations"]
    assert runs["ssnet"]["params"]["consistency_rampup"] == pytest.approx(
        paper["params"]["consistency_rampup"] * shortened, abs=1e-3)
    assert all(r["training"]["patch_size"] == r["inference"]["patch_size"] for r in runs.values())


def test_resolution_is_idempotent(config):
    assert resolve_config(config) == config


def test_every_run_key_is_resolved(raw):
    """Keys left out of the config files come from the schema and the declarations."""
    del raw["datasets"]["LA"]["training"]["crop_pad_extra"], raw["datasets"]["LA"]["selection"]["val_start"]
    del raw["device"], raw["datasets"]["LA"]["network"]["dropout"]
    run = run_config(resolve_config(raw), "LA", "uamt", "4")
    assert run["training"]["crop_pad_extra"] == 3 and run["selection"]["val_start"] == 0
    assert run["device"] == "auto" and run["network"] == {"arch": "vnet", "n_filters": 16, "dropout": True}
    declared = method_fragment("uamt")["params"]
    assert set(run["params"]) == set(declared) and run["params"]["entropy_eps"] == declared["entropy_eps"]["default"]
    assert set(run["training"]) >= {"lr", "momentum", "num_workers", "log_every", "poly_power"}


def test_config_import_is_torch_free():
    code = ("import sys, ssnet.config, ssnet.workflow, ssnet.report.targets, ssnet.config.__main__; "
            "heavy = {'torch', 'h5py', 'SimpleITK', 'pandas'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ------------------------------------------------------------------------------ method variants
def test_ablations_follow_ssnet_on_each_dataset(raw):
    _set(raw, "methods.ssnet.params.LA.vat_eps", 8)
    _set(raw, "methods.ssnet.params.ACDC.vat_eps", 5)
    _set(raw, "methods.ssnet.params.ACDC.consistency", 0.2)
    config = resolve_config(raw)
    for ablation, own in (("ssnet_no_smooth", {"smoothness": False, "separation": True}),
                          ("ssnet_no_sep", {"smoothness": True, "separation": False}),
                          ("ssnet_no_both", {"smoothness": False, "separation": False})):
        for dataset, eps in (("LA", 8), ("ACDC", 5)):
            run, parent = run_config(config, dataset, ablation, "4"), run_config(config, dataset, "ssnet", "4")
            assert run["params"]["vat_eps"] == eps
            assert run["params"] == {**parent["params"], **own}
            assert run["method_type"] == "ssnet" and run["training"] == parent["training"]
        assert run_config(config, "ACDC", ablation, "3")["params"]["consistency"] == 0.2
    assert config["methods"]["ssnet_no_sep"]["label"] == {"LA": "SS-Net w/o separation", "ACDC": "SS-Net w/o separation"}


def test_variant_inherits_schedule_labelled_and_overrides(raw):
    raw["methods"]["uamt_long"] = {"extends": "uamt", "training": {"LA": {"iterations": 9000}},
                                   "params": {"all": {"ema_decay": 0.999}, "ACDC": {"ema_decay": 0.9}}}
    raw["methods"]["uamt"]["labelled"] = {"LA": [8]}
    config = resolve_config(raw)
    assert run_config(config, "LA", "uamt_long", "8")["training"]["iterations"] == 9000
    assert run_config(config, "LA", "uamt_long", "8")["training"]["lr_policy"] == "step"  # from uamt
    assert labelled_values(config, "LA", "uamt_long") == ["8"]
    assert config["methods"]["uamt_long"]["params"]["LA"]["ema_decay"] == 0.999
    assert config["methods"]["uamt_long"]["params"]["ACDC"]["ema_decay"] == 0.9
    assert config["methods"]["uamt_long"]["label"]["LA"] == "UA-MT"


@pytest.mark.parametrize("block, message", [
    ({"extends": "nonexistent"}, r"methods\.bad\.extends = 'nonexistent'.*must name another method block"),
    ({"extends": "ssnet", "type": "ssnet"}, r"states both type and extends"),
    ({"label": "x"}, r"methods\.bad needs a type"),
    ({"type": "nonexistent"}, r"unknown method type 'nonexistent'"),
    ({"extends": "ssnet", "params": {"Pancreas": {}}}, r"methods\.bad\.params\.Pancreas"),
])
def test_bad_method_blocks(raw, block, message):
    raw["methods"]["bad"] = block
    with pytest.raises(ConfigError, match=message):
        resolve_config(raw)


def test_extends_cycle_is_named(raw):
    raw["methods"]["a"] = {"extends": "b"}
    raw["methods"]["b"] = {"extends": "a"}
    with pytest.raises(ConfigError, match=r"cycle"):
        resolve_config(raw)


# ------------------------------------------------------------------------------ bad values
BAD_VALUES = [  # (dotted key, value, text the message must contain)
    ("methods.ssnet.params.LA.vat_eps", "ten", "methods.ssnet.params.LA.vat_eps = 'ten' is not allowed: it must be a number > 0"),
    ("methods.ssnet.params.LA.vat_eps", -5, "methods.ssnet.params.LA.vat_eps = -5 is not allowed: it must be a number > 0"),
    ("methods.ssnet.params.ACDC.power_iterations", 0, "methods.ssnet.params.ACDC.power_iterations = 0 is not allowed"),
    ("methods.ssnet.params.LA.recompute", "some", "methods.ssnet.params.LA.recompute = 'some' is not allowed: it must be one of"),
    ("methods.ssnet.params.LA.dice_wieght", 1.0, "unknown config key(s): methods.ssnet.params.LA.dice_wieght"),
    ("datasets.LA.training.iterations", 4.0, "datasets.LA.training.iterations = 4.0 is not allowed: it must be an integer"),
    ("datasets.LA.training.iteratoins", 5, "unknown config key(s): datasets.LA.training.iteratoins"),
    ("datasets.LA.labelled", [4, 81], "datasets.LA.labelled = [4, 81] is not allowed: "),
    ("datasets.ACDC.labelled", [3, 71], "datasets.ACDC.labelled = [3, 71] is not allowed: "),
    ("methods.ssnet_no_sep.labelled.LA", [90], "methods.ssnet_no_sep.labelled.LA = [90] is not allowed"),
    ("datasets.LA.selection", {"mode": "best_val", "validation_cases": 80},
     "datasets.LA.selection.validation_cases = 80 is not allowed"),
    ("datasets.LA.selection", {"mode": "best_val"}, "datasets.LA.selection.validation_cases = 0 is not allowed"),
    ("datasets.LA.training.patch_size", [112, 112], "datasets.LA.training.patch_size = [112, 112] is not allowed"),
    ("datasets.ACDC.inference.patch_size", [256, 256, 8], "datasets.ACDC.inference.patch_size = [256, 256, 8]"),
    ("methods.uamt.training.LA.patch_size", [96, 96], "methods.uamt.training.LA.patch_size = [96, 96] is not allowed"),
    ("datasets.LA.network", {"arch": "unet"}, "datasets.LA.network.arch = 'unet' is not allowed: LA is a 3D dataset"),
    ("datasets.LA.network.n_filters", 0, "datasets.LA.network.n_filters = 0 is not allowed"),
    ("methods.ssnet.params.ACDC.supervised_dice", "binary_foreground",
     "methods.ssnet.params.ACDC.supervised_dice = 'binary_foreground' is not allowed: it needs a two-class dataset"),
    ("datasets.LA.preprocessing.margin_low", -1, "datasets.LA.preprocessing.margin_low = -1 is not allowed"),
    ("datasets.Pancreas", {}, "unknown dataset 'Pancreas'"),
    ("datasets.LA.splits_dir", "/nonexistent", "datasets.LA.splits_dir = '/nonexistent' is not allowed"),
    ("seeds", [1, "two"], "seeds.1 = 'two' is not allowed"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_bad_value_names_key_value_and_what_is_allowed(raw, key, value, message):
    _set(raw, key, value)
    with pytest.raises(ConfigError) as error:
        resolve_config(raw)
    assert message in str(error.value)


def test_labelled_count_message_says_what_is_allowed(raw):
    _set(raw, "datasets.LA.selection", {"mode": "best_val", "validation_cases": 8})
    _set(raw, "datasets.LA.labelled", [76])
    with pytest.raises(ConfigError, match=r"gives 72 training scans \(80 minus 8 validation cases\), so each "
                                          r"count must be 1\.\.72"):
        resolve_config(raw)


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config([bad])


def test_run_config_merges_method_overrides(config):
    run = run_config(config, "ACDC", "supervised", "3")
    assert run["training"]["lr_policy"] == "poly"  # method override
    assert run["training"]["iterations"] == 30000  # dataset value
    assert run["params"] == {"ce_weight": 0.5, "dice_weight": 0.5, "dice_smooth": 1e-5, "supervised_dice": "auto"}
    assert labelled_values(config, "LA", "supervised") == ["4", "8", FULL]


def test_uniform_schedule_profile_drops_method_schedules(config):
    config["schedule_profile"] = "uniform"
    run = run_config(config, "ACDC", "supervised", "3")
    assert run["training"]["lr_policy"] == "constant" and run["schedule_profile"] == "uniform"


def test_method_can_restrict_its_labelled_counts(config):
    config["methods"]["ssnet_no_sep"]["labelled"] = {"LA": [8]}
    config = resolve_config(config)
    assert labelled_values(config, "LA", "ssnet_no_sep") == ["8"]
    assert labelled_values(config, "ACDC", "ssnet_no_sep") == ["3", "7"]


# ------------------------------------------------------------------------------ show
def test_show_prints_the_resolved_run(tmp_path, capsys):
    overlay = tmp_path / "eps.yaml"
    overlay.write_text("methods: {ssnet: {params: {LA: {vat_eps: 8}, ACDC: {vat_eps: 5}}}}\n")
    assert config_cli(["show", "--configfile", str(overlay), "--run", "LA/ssnet_no_sep/4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["params"]["vat_eps"] == 8 and shown["params"]["separation"] is False
    assert config_cli(["show", "--configfile", str(overlay), "--run", "ACDC/ssnet_no_sep/3", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["vat_eps"] == 5


def test_show_command_line(tmp_path):
    overlay = tmp_path / "eps.yaml"
    overlay.write_text("methods: {ssnet: {params: {LA: {vat_eps: 8}}}}\n")
    result = subprocess.run([sys.executable, "-m", "ssnet.config", "show", "--configfile", str(overlay),
                             "--run", "LA/ssnet_no_sep/4"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and re.search(r"^  vat_eps: 8$", result.stdout, re.M)
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {ssnet: {params: {LA: {vat_eps: -5}}}}\n")
    result = subprocess.run([sys.executable, "-m", "ssnet.config", "show", "--configfile", str(bad)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "vat_eps = -5" in result.stderr and "Traceback" not in result.stderr


def test_runs_lists_the_grid(capsys):
    assert config_cli(["runs"]) == 0
    runs = yaml.safe_load(capsys.readouterr().out)
    assert runs["LA"]["supervised"] == ["4", "8", FULL] and runs["LA"]["ssnet_no_both"] == ["4", "8"]


# ------------------------------------------------------------------------------ dry run
DRY_RUN_ERRORS = [  # one per class of error: type, range, choice, cross-check with the splits, dataset
    ("methods: {ssnet: {params: {LA: {vat_eps: ten}}}}", "methods.ssnet.params.LA.vat_eps = 'ten'"),
    ("methods: {ssnet: {params: {LA: {power_iterations: 0}}}}", "methods.ssnet.params.LA.power_iterations = 0"),
    ("datasets: {LA: {training: {iterations: 4.0}}}", "datasets.LA.training.iterations = 4.0"),
    ("datasets: {LA: {labelled: [99]}}", "datasets.LA.labelled = [99]"),
    ("datasets: {LA: {network: {arch: unet}}}", "datasets.LA.network.arch = 'unet'"),
]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return paper_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.mark.parametrize("overlay, message", DRY_RUN_ERRORS, ids=[m for _, m in DRY_RUN_ERRORS])
def test_dry_run_stops_on_a_bad_value(checkout, tmp_path, overlay, message):
    path = tmp_path / "bad.yaml"
    path.write_text(overlay + "\n")
    result = run_snakemake(checkout, "-n", "--cores", "8", "all", "--configfile", str(path))
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_paper_grid_dry_run_plans_every_run(checkout):
    result = run_snakemake(checkout, "-n", "--cores", "8", "all", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_config([ROOT / "config.yaml"])
    trainings = sum(len(labelled_values(config, d, m)) * len(config["seeds"])
                    for d in ("LA", "ACDC") for m in config["datasets"][d]["methods"])
    assert re.search(rf"^train\s+{trainings}$", result.stdout, re.M), result.stdout
