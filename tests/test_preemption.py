"""Preemption-safe training as Snakemake runs it: a training job stopped by a signal mid-run is retried
(profiles/default: ``retries``), resumes from ``results/checkpoints/...`` (not a declared output, so it
survives the failed attempt) and ends with exactly the outputs of an uninterrupted run (CPU).

The same slice of the demo DAG (LA, one labelled count, one seed) runs once uninterrupted (the reference,
shared with tests/test_slurm.py, which repeats the kill through a real SLURM with ``scancel``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml

from conftest import ROOT, copy_project, tiny_run_config
from ssnet.engine.checkpoint import load_torch
from ssnet.engine.trainer import Preempted, RunOutputs, Trainer, train

RUN = "results/runs/LA/supervised/2/seed1"
TRAIN_LOG = "logs/train/LA/supervised/2/seed1.log"
CHECKPOINT = "results/checkpoints/LA/supervised/2/seed1/last.pt"
ITERATIONS, STOP_AFTER = 200, 60  # ~12 it/s on one CPU core: the signal lands mid-run
# The slice: configs/demo.yaml reduced to one LA training run (make_synthetic, preprocess, train, evaluate,
# aggregate), long enough to be stopped in the middle.
SLICE = {
    "seeds": [1],
    "datasets": {
        "ACDC": {"enabled": False},
        "LA": {
            "methods": ["supervised"],
            "labelled": [2],
            "full_supervision": False,
            "training": {"iterations": ITERATIONS, "checkpoint_every": 50, "log_every": 5},
            "selection": {"mode": "last"},
        },
    },
}
TARGET = "results/tables/LA/main_table.md"  # make_synthetic -> preprocess -> train -> evaluate -> aggregate
PROGRESS = re.compile(r"\] it (\d+)/")


# ------------------------------------------------------------------------------------------ helpers
def make_checkout(root: Path) -> Path:
    """A clean copy of the workflow plus the slice overlay (``slice.yaml``)."""
    copy_project(root)
    (root / "slice.yaml").write_text(yaml.safe_dump(SLICE))
    return root


def snakemake(*args: str) -> list[str]:
    """The slice's command: its aggregation table as the target (the jobs behind `all` grow with the report)."""
    return [sys.executable, "-m", "snakemake", TARGET, "--configfile", "configs/demo.yaml", "slice.yaml", *args]


def last_iteration(log: Path) -> int:
    found = PROGRESS.findall(log.read_text()) if log.exists() else []
    return int(found[-1]) if found else 0


def wait_for_progress(log: Path, iteration: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Block until the training log reports ``iteration`` (fail if the workflow ends or stalls first)."""
    deadline = time.monotonic() + timeout
    while last_iteration(log) < iteration:
        if process.poll() is not None:
            pytest.fail(f"workflow ended before training reached iteration {iteration}:\n"
                        f"{process.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"training did not reach iteration {iteration} within {timeout:.0f} s")
        time.sleep(0.2)


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"workflow did not finish within {timeout:.0f} s:\n{output[-4000:]}")
    return output


def assert_same_run(actual: Path, expected: Path) -> None:
    """Same selected weights, per-iteration log and test metrics as the reference run."""
    got, want = load_torch(actual / RUN / "model.pt"), load_torch(expected / RUN / "model.pt")
    assert got["selected_iteration"] == want["selected_iteration"] == ITERATIONS
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), f"weights differ from the uninterrupted run: {key}"
    for name in ("train_log.csv", "test_metrics.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(actual / RUN / name), pd.read_csv(expected / RUN / name),
                                      obj=name)
    assert (actual / TARGET).exists()
    assert not (actual / CHECKPOINT).exists(), "the resume checkpoint is removed after a successful run"


def assert_resumed(checkout: Path, stopped_at: int) -> int:
    """The retried attempt resumed (its log says from which iteration) instead of starting over."""
    log = (checkout / TRAIN_LOG).read_text()
    resumed = re.search(r"resumed from \S+ at iteration (\d+)", log)
    assert resumed, f"the retried training job did not resume from its checkpoint:\n{log[-2000:]}"
    assert int(resumed.group(1)) >= stopped_at
    return int(resumed.group(1))


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """The slice run once, locally and uninterrupted (cached for the session; test_slurm.py uses it too)."""
    root = tmp_path_factory.getbasetemp() / "preemption-reference"
    if (root / RUN / "test_metrics.csv").exists():
        return root
    root.mkdir(exist_ok=True)
    make_checkout(root)
    done = subprocess.run(snakemake("--cores", "2"), cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resumed" not in (root / TRAIN_LOG).read_text()
    return root


# -------------------------------------------------------------------------------------------- tests
def test_sigusr1_checkpoints_and_resumes(preprocessed, tmp_path):
    """SIGUSR1 (SLURM's usual early-warning signal) is handled like SIGTERM by the engine."""
    cfg = tiny_run_config("ACDC", iterations=5, checkpoint_every=100)
    outputs = lambda name: RunOutputs(*(tmp_path / name / f for f in  # noqa: E731
                                        ("model.pt", "train_log.csv", "val_log.csv", "run_info.json")))
    train(cfg, 4, preprocessed["ACDC"], outputs("full"), tmp_path / "ckpt_full")

    def usr1(done):
        if done == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(Preempted, match=f"signal {int(signal.SIGUSR1)}") as stopped:
        Trainer(cfg, 4, preprocessed["ACDC"], tmp_path / "ckpt").fit(on_iteration_end=usr1)
    assert stopped.value.code != 0  # the job fails, so that the scheduler/Snakemake retries it
    assert load_torch(tmp_path / "ckpt" / "last.pt")["iteration"] == 3
    train(cfg, 4, preprocessed["ACDC"], outputs("resumed"), tmp_path / "ckpt")
    full, resumed = load_torch(tmp_path / "full" / "model.pt"), load_torch(tmp_path / "resumed" / "model.pt")
    for key, value in full["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


_TRAIN_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
from conftest import tiny_run_config
from ssnet.engine.trainer import RunOutputs, train
cfg = tiny_run_config("LA", iterations=60, checkpoint_every=1000, log_every=1, num_workers=2)
out = {out!r}
train(cfg, 3, {data!r}, RunOutputs(*(out + "/" + f for f in ("model.pt", "train_log.csv", "val_log.csv",
                                                              "run_info.json"))), {ckpt!r})
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_to_the_whole_job_with_loader_workers(preprocessed, tmp_path, sig):
    """SLURM signals every process of a job step, data-loading workers included: the trainer must still
    checkpoint (workers ignore the stop signals instead of dying and making the DataLoader raise)."""
    script = tmp_path / "job.py"
    script.write_text(_TRAIN_SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT), data=str(preprocessed["LA"]),
                                           out=str(tmp_path / "out"), ckpt=str(tmp_path / "ckpt")))
    job = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        lines = []
        while not any(" it 10/" in line for line in lines[-1:]):
            line = job.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        os.killpg(job.pid, sig)  # the whole process group, as a scheduler does
        output = "".join(lines) + job.communicate(timeout=120)[0]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0 and f"stopped by signal {int(sig)}" in output, output[-3000:]
    assert "DataLoader worker" not in output, output[-3000:]
    stopped = load_torch(tmp_path / "ckpt" / "last.pt")["iteration"]
    assert stopped >= 10

    resumed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-3000:]
    cfg = tiny_run_config("LA", iterations=60, checkpoint_every=1000, log_every=1, num_workers=2)
    full = tmp_path / "full"
    train(cfg, 3, preprocessed["LA"], RunOutputs(full / "model.pt", full / "train_log.csv", full / "val_log.csv",
                                                 full / "run_info.json"), tmp_path / "ckpt_full")
    want, got = load_torch(full / "model.pt")["state_dict"], load_torch(tmp_path / "out" / "model.pt")["state_dict"]
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_sigterm_to_training_job_is_retried_and_resumes(reference, tmp_path):
    """Local run (no SLURM): SIGTERM to the training script's process mid-run; Snakemake retries the job."""
    checkout = make_checkout(tmp_path)
    workflow = subprocess.Popen(snakemake("--cores", "2"), cwd=checkout, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_progress(checkout / TRAIN_LOG, STOP_AFTER, workflow)
        trainers = [p for p in psutil.Process(workflow.pid).children(recursive=True)
                    if any(part.endswith("train.py") for part in p.cmdline())]
        assert len(trainers) == 1, [p.cmdline() for p in trainers]
        # `script:` jobs run in Snakemake's process group: a signal to the group (terminal, batch system,
        # SLURM's job step) reaches the training process as well.
        assert os.getpgid(trainers[0].pid) == os.getpgid(workflow.pid)
        trainers[0].send_signal(signal.SIGTERM)
        stopped_at = last_iteration(checkout / TRAIN_LOG)
        output = finish(workflow, timeout=600)
    finally:
        if workflow.poll() is None:
            workflow.kill()
    assert workflow.returncode == 0, output[-4000:]
    assert "stopped by signal 15" in output and "checkpoint written" in output
    assert re.search(r"[Tt]rying to restart job", output), output[-4000:]
    assert_resumed(checkout, stopped_at)
    assert_same_run(checkout, reference)
