"""Datasets are plugins: a third dataset is one module, with no rule, script or package edits.

The toy dataset is LA's synthetic 3D two-class generator registered under another name; it goes
through the dry run of the whole DAG and one tiny training and evaluation.
"""

import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, copy_project, run_snakemake

TOY_MODULE = '''"""Toy3D: a test dataset (LA's synthetic generator and layout under another name)."""

from ssnet.datasets.base import register_dataset
from ssnet.datasets.la import LA


@register_dataset
class Toy3D(LA):
    name = "Toy3D"
    class_names = ("blob",)
    class_descriptions = ("a synthetic blob",)
    paper_full_labelled = None
'''

TOY_OVERLAY = """
seeds: [1]
device: cpu
schedule_profile: uniform
datasets:
  LA: {enabled: false}
  ACDC: {enabled: false}
  Toy3D:
    source: synthetic
    splits_dir: unused
    synthetic: {n_cases: 8, size_xy: [48, 48], n_slices: 16, test_fraction: 0.25}
    preprocessing: {seed: 1, min_extent: 32}
    network: {arch: vnet, n_filters: 2}
    labelled: [2]
    full_supervision: false
    methods: [supervised, ssnet]
    training: {iterations: 4, batch_labelled: 2, batch_unlabelled: 2, batch_labelled_only: 2,
               patch_size: [32, 32, 16], lr_policy: constant, checkpoint_every: 2, log_every: 2}
    selection: {mode: last}
    inference: {patch_size: [32, 32, 16], stride_xy: 16, stride_z: 8}
methods:
  ssnet: {params: {Toy3D: {vat_eps: 3.0}}}
"""


@pytest.fixture(scope="module")
def toy_checkout(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("toy_checkout"))
    (root / "ssnet" / "datasets" / "toy3d.py").write_text(TOY_MODULE)
    (root / "toy.yaml").write_text(TOY_OVERLAY)
    return root


def test_no_dataset_names_outside_the_dataset_modules():
    pattern = re.compile(r"""["'](LA|ACDC)["']""")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "ssnet").rglob("*.py")
                 if path.parent.name != "datasets" or path.stem not in ("la", "acdc")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_toy_dataset_resolves_and_shows(toy_checkout):
    result = subprocess.run([sys.executable, "-m", "ssnet.config", "show", "--base", "config.yaml",
                             "--configfile", "toy.yaml", "--run", "Toy3D/ssnet_no_sep/2"],
                            cwd=toy_checkout, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  vat_eps: 3.0$", result.stdout, re.M) and "separation: false" in result.stdout


def test_toy_dataset_dry_run_plans_the_whole_dag(toy_checkout):
    result = run_snakemake(toy_checkout, "-n", "all", "--cores", "2", "--configfile", "toy.yaml", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^train\s+2$", result.stdout, re.M) and re.search(r"^evaluate\s+2$", result.stdout, re.M)
    assert re.search(r"^preprocess\s+1$", result.stdout, re.M) and re.search(r"^aggregate\s+1$", result.stdout, re.M)


def test_toy_dataset_bad_patch_stops_the_dry_run(toy_checkout, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {Toy3D: {training: {patch_size: [32, 32]}}}\n")
    result = run_snakemake(toy_checkout, "-n", "all", "--cores", "2", "--configfile", "toy.yaml", str(bad))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "datasets.Toy3D.training.patch_size = [32, 32] is not allowed: Toy3D is a 3D dataset" in result.stderr


def test_toy_dataset_trains_and_evaluates(toy_checkout):
    target = "results/runs/Toy3D/ssnet/2/seed1/test_metrics.csv"
    result = run_snakemake(toy_checkout, target, "--cores", "2", "--configfile", "toy.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = pd.read_csv(toy_checkout / target)
    assert set(metrics["dataset"]) == {"Toy3D"} and set(metrics["class"]) == {1} and len(metrics) == 2
    assert metrics["dice"].between(0, 1).all()
