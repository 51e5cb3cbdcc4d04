"""The pinned conda envs (envs/*.yaml) and the pip pins CI installs (requirements*.txt) stay in step, and the
config's device picks the training env and the GPU request.

`--use-conda` itself cannot run here (no conda channels on CI machines): these tests check everything
around it - exact pins, the same versions as the pip install the test suite runs on, the PyTorch build
variant, and which env file the DAG resolves for ``device: cpu`` / ``device: cuda``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

ENVS = sorted((ROOT / "envs").glob("*.yaml"))
TRAIN_ENVS = {"cpu": ROOT / "envs" / "train-cpu.yaml", "cuda": ROOT / "envs" / "train-cuda.yaml"}
# conda-forge name -> PyPI name, where they differ (beyond case)
CONDA_TO_PIP = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
CONDA_ONLY = {"python"}
PIP_ONLY = {"snakemake"}  # the workflow engine runs the envs, it is not installed in them
# conda-forge PyTorch build strings: cpu_<blas>_py<XY>_h<hash>_<n> and cuda<XYZ>_<blas>_py<XY>_h<hash>_<n>
PYTORCH_BUILD = {"cpu": "cpu_*", "cuda": "cuda12*"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_pins(path: Path) -> dict[str, tuple[str, str | None]]:
    """{pip-normalised name: (version, build or None)}; every dependency must be an exact `==` pin."""
    env = yaml.safe_load(path.read_text())
    assert env["channels"][0] == "conda-forge", f"{path.name}: conda-forge must be the first channel"
    pins = {}
    for spec in env["dependencies"]:
        assert isinstance(spec, str), f"{path.name}: nested (pip) sections are not allowed: {spec}"
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][^=\s]*)(?:=(\S+))?", spec)
        assert match, f"{path.name}: '{spec}' is not an exact pin (name==version[=build])"
        name = _normalise(match.group(1))
        pins[_normalise(CONDA_TO_PIP.get(name, name))] = (match.group(2), match.group(3))
    return pins


def pip_pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of a requirements file, following `-r` includes."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            pins.update(pip_pins(path.parent / line[2:].strip()))
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        assert match, f"{path.name}: '{line}' is not an exact pin (name==version)"
        pins[_normalise(match.group(1))] = match.group(2)
    return pins


def test_requirements_are_exact_pins():
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-slurm.txt"):
        assert pip_pins(ROOT / name)


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_conda_env_versions_equal_requirements(env):
    requirements = pip_pins(ROOT / "requirements.txt")
    mismatches = [
        f"{name}: {env.name} pins {version}, requirements.txt pins {requirements[name]}"
        for name, (version, _) in conda_pins(env).items()
        if name in requirements and requirements[name] != version
    ]
    unknown = sorted(set(conda_pins(env)) - set(requirements) - CONDA_ONLY)
    assert not mismatches, "conda env and pip pins out of step:\n" + "\n".join(mismatches)
    assert not unknown, f"{env.name} pins packages that requirements.txt does not: {unknown}"


@pytest.mark.parametrize("device", sorted(TRAIN_ENVS))
def test_training_envs_carry_every_requirement_and_the_pytorch_variant(device):
    pins, requirements = conda_pins(TRAIN_ENVS[device]), pip_pins(ROOT / "requirements.txt")
    missing = sorted(set(requirements) - set(pins) - PIP_ONLY)
    assert not missing, f"{TRAIN_ENVS[device].name} lacks {missing} (in requirements.txt)"
    version, build = pins["torch"]
    assert build == PYTORCH_BUILD[device], (
        f"{TRAIN_ENVS[device].name}: pytorch=={version} must be pinned to the {device} build "
        f"'={PYTORCH_BUILD[device]}', found '={build}'")


def test_python_pin_satisfies_the_package():
    versions = {conda_pins(env)["python"][0] for env in ENVS}
    assert len(versions) == 1, f"envs pin different Python versions: {versions}"
    requires = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    major, minor = (int(x) for x in versions.pop().split(".")[:2])
    assert (major, minor) >= (int(requires.group(1)), int(requires.group(2)))


# ------------------------------------------------------------ device -> env and GPU request (the DAG)
@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("envs-checkout")
    for name in ("Snakefile", "config.yaml", "configs", "rules", "scripts", "envs", "ssnet", "resources", "profiles"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, root / name)
    return root


def _snakemake(checkout: Path, device: str, *args: str) -> str:
    overlay = checkout / f"device-{device}.yaml"
    overlay.write_text(yaml.safe_dump({"device": device}))
    done = subprocess.run([sys.executable, "-m", "snakemake", *args, "--configfile", "configs/demo.yaml",
                           str(overlay)], cwd=checkout, capture_output=True, text=True, timeout=300)
    return done.stdout + done.stderr


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_device_selects_training_env_and_gpu_request(checkout, device):
    # --containerize resolves every job's conda env (it names each env file before it needs conda itself)
    envs = set(re.findall(r"Hashing conda environment (envs/\S+\.yaml)", _snakemake(checkout, device, "--containerize")))
    assert envs == {"envs/analysis.yaml", f"envs/train-{device}.yaml"}, envs
    plan = _snakemake(checkout, device, "all", "-n")
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", plan, flags=re.M)
    assert {rule for rule, _ in jobs} >= {"make_synthetic", "preprocess", "train", "evaluate", "aggregate"}, plan[-3000:]
    for rule, resources in jobs:
        gpus = int(re.search(r"\bgpu=(\d+)", resources).group(1)) if "gpu=" in resources else 0
        wanted = 1 if device == "cuda" and rule in ("train", "evaluate") else 0
        assert gpus == wanted, f"device {device}: rule {rule} requests gpu={gpus}"


def test_amp_and_cudnn_switches_only_act_on_cuda(preprocessed, tmp_path):
    """`amp: true` / `cudnn_benchmark: true` with a CPU device change nothing (AMP is CUDA-only)."""
    import torch

    from conftest import tiny_run_config
    from ssnet.engine.checkpoint import load_torch
    from ssnet.engine.trainer import RunOutputs, Trainer, train

    def run(name, **switches):
        cfg = {**tiny_run_config("ACDC", iterations=3), "device": "cpu", **switches}
        out = tmp_path / name
        train(cfg, 2, preprocessed["ACDC"], RunOutputs(out / "model.pt", out / "train_log.csv", out / "val_log.csv",
                                                       out / "run_info.json"), tmp_path / f"ckpt_{name}")
        return load_torch(out / "model.pt")["state_dict"]

    trainer = Trainer({**tiny_run_config("ACDC"), "device": "cpu", "amp": True}, 2, preprocessed["ACDC"],
                      tmp_path / "ckpt")
    assert trainer.amp is False and not trainer.scaler.is_enabled()
    plain, switched = run("plain"), run("switched", amp=True, cudnn_benchmark=True)
    for key, value in plain.items():
        assert torch.equal(switched[key], value), key
