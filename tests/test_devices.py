"""The device is resolved when the workflow is parsed (torch-free); GPU jobs get one slot each."""

import os
import re
import stat
import subprocess
import sys

import pytest
from conftest import FAST_DEMO, ROOT, copy_project, paper_checkout
from ssnet.devices import DevicePlan, claim_gpu, gpu_job_limit, resolve_device, visible_gpus
from ssnet.errors import ConfigError

FAKE_SMI = "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-aaaa)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-bbbb)'\n"


@pytest.fixture(scope="module")
def fake_gpus(tmp_path_factory):
    """A folder with an ``nvidia-smi`` that lists two GPUs."""
    folder = tmp_path_factory.mktemp("fake_gpus")
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return folder


def _env(fake_gpus=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSNET_") and k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{fake_gpus}:{env['PATH']}" if fake_gpus else env["PATH"]
    return {**env, **extra}


def test_auto_follows_the_visible_gpus(fake_gpus, tmp_path):
    plan = resolve_device("auto", _env(fake_gpus))
    assert plan.device == "cuda" and plan.gpus == ("0", "1") and plan.names[1] == "GPU 1: NVIDIA H200"
    assert plan.describe().startswith("device: cuda (device: auto), 2 GPUs visible: GPU 0: NVIDIA H200")
    assert resolve_device("auto", _env(fake_gpus, CUDA_VISIBLE_DEVICES="1")).gpus == ("1",)
    assert resolve_device("auto", _env(fake_gpus, CUDA_VISIBLE_DEVICES="")).device == "cpu"
    assert resolve_device("auto", _env(None, PATH=str(tmp_path))).device == "cpu"
    assert resolve_device("cpu", _env(fake_gpus)).device == "cpu"
    login_node = resolve_device("cuda", _env(None, PATH=str(tmp_path)))  # no GPU on the submit host
    assert login_node.device == "cuda" and login_node.gpus == ()
    inherited = resolve_device("auto", _env(None, SSNET_DEVICE="cuda", SSNET_GPUS="0,1"))
    assert inherited.device == "cuda" and inherited.source == "submit host"


def test_gpu_job_limit():
    plan = DevicePlan("auto", "cuda", ("0", "1"), (), "test")
    assert gpu_job_limit(plan, 1, local=True, user_set=False) == 2
    assert gpu_job_limit(plan, 2, local=True, user_set=False) == 4
    assert gpu_job_limit(plan, 1, local=False, user_set=False) is None  # cluster executor
    assert gpu_job_limit(plan, 1, local=True, user_set=True) is None  # --resources gpu=...
    assert gpu_job_limit(DevicePlan("auto", "cpu", (), (), "test"), 1, local=True, user_set=False) is None


CLAIM = ("import sys, time; from ssnet.devices import claim_gpu; gpu, slot, _ = claim_gpu(sys.argv[1], int(sys.argv[2]), "
         "wait_seconds=float(sys.argv[3]), poll_seconds=0.1); print(gpu, slot, flush=True); time.sleep(float(sys.argv[4]))")


def _claim(lock_dir, slots, env, wait=0.0, hold=3.0):
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(lock_dir), str(slots), str(wait), str(hold)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_jobs_take_different_gpus(tmp_path):
    env = _env(None, SSNET_DEVICE="cuda", SSNET_GPUS="0,1")
    first = _claim(tmp_path, 1, env, hold=30.0)
    first_gpu = first.stdout.readline().split()[0]  # holds its slot from now on
    second = _claim(tmp_path, 1, env, hold=30.0)
    second_gpu = second.stdout.readline().split()[0]
    assert {first_gpu, second_gpu} == {"0", "1"}
    third = _claim(tmp_path, 1, env, wait=0.5)  # both GPUs taken: gives up after 0.5 s
    assert third.wait(30) != 0 and "no free GPU slot" in third.stderr.read()
    first.kill(), second.kill()  # a killed job's slot is released by the kernel
    first.wait(30), second.wait(30)
    again = _claim(tmp_path, 1, env, hold=0)  # the slots are free again once their processes ended
    assert again.communicate(timeout=30)[0].split()[0] in {"0", "1"}


def test_two_jobs_share_a_gpu_with_two_slots(tmp_path):
    env = _env(None, SSNET_DEVICE="cuda", SSNET_GPUS="0")
    jobs = [_claim(tmp_path, 2, env, hold=2.0) for _ in range(2)]
    claimed = sorted(tuple(job.communicate(timeout=30)[0].split()) for job in jobs)
    assert claimed == [("0", "0"), ("0", "1")]


def test_cuda_without_a_gpu_stops_with_a_paragraph(tmp_path):
    with pytest.raises(ConfigError, match=r"planned for device cuda .* sees no GPU .*device: cpu"):
        claim_gpu(tmp_path, 1, _env(None, PATH=str(tmp_path), SSNET_DEVICE="cuda", SSNET_GPUS=""))
    assert visible_gpus(_env(None, PATH=str(tmp_path)))[0] == ()


# ------------------------------------------------------------------------------------ the DAG
@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return paper_checkout(tmp_path_factory.mktemp("devices_checkout"))


def _dry_run(checkout, env, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "8", "all", *args], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=600)


def _job_resources(output):
    return re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, flags=re.M)


def test_paper_grid_with_two_gpus_plans_cuda_jobs(checkout, fake_gpus):
    result = _dry_run(checkout, _env(fake_gpus))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device: cuda (device: auto), 2 GPUs visible: GPU 0: NVIDIA H200, GPU 1: NVIDIA H200" in result.stderr
    assert "GPU jobs: at most 2 at once" in result.stderr
    jobs = _job_resources(result.stdout)
    assert {rule for rule, resources in jobs if "gpu=1" in resources} == {"train", "evaluate"}
    envs = subprocess.run([sys.executable, "-m", "snakemake", "--containerize"], cwd=checkout, env=_env(fake_gpus),
                          capture_output=True, text=True, timeout=600)
    assert "envs/train-cuda.yaml" in envs.stdout + envs.stderr
    assert "envs/train-cpu.yaml" not in envs.stdout + envs.stderr


def test_paper_grid_without_gpus_plans_cpu_and_says_what_it_costs(checkout, tmp_path):
    env = _env(None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (p and os.path.exists(
        os.path.join(p, "nvidia-smi"))))
    result = _dry_run(checkout, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device: cpu (device: auto), 0 GPUs visible" in result.stderr
    assert re.search(r"device cpu: the training grid is estimated at \d+ CPU-hours", result.stderr)
    assert not any("gpu=1" in resources for _, resources in _job_resources(result.stdout))


def test_user_gpu_resource_wins(checkout, fake_gpus):
    result = _dry_run(checkout, _env(fake_gpus), "--resources", "gpu=1")
    assert result.returncode == 0 and "GPU jobs: at most" not in result.stderr


def test_plan_command_prints_the_grid(checkout, fake_gpus):
    result = subprocess.run([sys.executable, "-m", "ssnet.config", "plan", "--base", "config.yaml"], cwd=checkout,
                            env=_env(fake_gpus), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("device: cuda") and lines[1].split()[:4] == ["dataset", "method", "labelled", "runs"]
    assert re.search(r"^LA\s+ssnet\s+4\s+3\s+15000\s+-", result.stdout, re.M)  # no GPU figure measured yet
    assert "total: 108 training runs" in lines[-1]
    cpu = subprocess.run([sys.executable, "-m", "ssnet.config", "plan", "--base", "config.yaml"], cwd=checkout,
                         env=_env(fake_gpus, CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=120)
    assert re.search(r"^LA\s+ssnet\s+4\s+3\s+15000\s+34.4\s+430\s+6.59", cpu.stdout, re.M)


def test_two_training_jobs_pin_themselves_and_stop_clearly_without_cuda(fake_gpus, tmp_path_factory):
    """Two concurrent demo trainings on two fake GPUs: each pins itself to a GPU slot, then stops with one
    paragraph because this PyTorch has no CUDA (the fail-fast path of a real job)."""
    root = copy_project(tmp_path_factory.mktemp("pin_checkout"))
    (root / "two.yaml").write_text("seeds: [1, 2]\ndevice: auto\ndatasets:\n  ACDC: {enabled: false}\n"
                                   "  LA: {methods: [supervised], labelled: [2], full_supervision: false}\n")
    targets = [f"results/runs/LA/supervised/2/seed{s}/model.pt" for s in (1, 2)]
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--keep-going",
                             "--retries", "0", "--configfile", *FAST_DEMO[1:], "two.yaml"], cwd=root,
                            env=_env(fake_gpus), capture_output=True, text=True, timeout=900)
    assert result.returncode != 0  # no CUDA here
    assert "GPU jobs: at most 2 at once" in result.stderr
    pinned = []
    for seed in (1, 2):
        log = (root / "logs" / "train" / "LA" / "supervised" / "2" / f"seed{seed}.log").read_text()
        pinned += re.findall(r"pinned to GPU (\d) \(slot 0\)", log)
        assert "planned for device cuda" in log and "reports no CUDA device" in log and "Traceback" not in log
    assert len(pinned) == 2 and set(pinned) <= {"0", "1"}
