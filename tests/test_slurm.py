"""profiles/slurm on a real SLURM (the one-node cluster of .ci/slurm-up.sh; skipped when no SLURM is up).

The slice of the demo DAG from tests/test_preemption.py runs through the SLURM executor with
profiles/slurm, only the site values replaced (see ``ci_profile``). Its training job is cancelled with
``scancel`` in the middle of the run; Snakemake resubmits it (``retries``), it resumes from its checkpoint,
and every output equals the uninterrupted local run of the same config.

CI (.ci/run) sets SSNET_REQUIRE_SLURM=1: there a missing cluster is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_preemption import (STOP_AFTER, TRAIN_LOG, assert_resumed, assert_same_run, finish, last_iteration,
                             make_checkout, reference, snakemake, wait_for_progress)

__all__ = ["reference"]  # the shared session fixture


def _slurm() -> tuple[str | None, str]:
    """(default partition, '') when a SLURM controller answers with a usable node; (None, why) otherwise."""
    if shutil.which("sinfo") is None:
        return None, "no SLURM client (sinfo) on PATH; start the test cluster with .ci/slurm-up.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%a|%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo timed out: no SLURM controller answers (.ci/slurm-up.sh starts one)"
    if out.returncode != 0:
        return None, f"sinfo failed ({out.stderr.strip()}): no SLURM controller up (.ci/slurm-up.sh starts one)"
    for line in out.stdout.split():
        partition, avail, state = line.split("|")
        if partition.endswith("*") and avail == "up" and state in ("idle", "mixed", "allocated"):
            return partition.rstrip("*"), ""
    return None, f"no default partition with a usable node: {out.stdout.strip()!r}"


@pytest.fixture(autouse=True, scope="session")
def partition() -> str:
    """The cluster's default partition. Skips without a cluster (fails under SSNET_REQUIRE_SLURM=1, as in
    CI); session-scoped and autouse, so it is checked before the (expensive) reference run."""
    name, why_not = _slurm()
    if name is None:
        if os.environ.get("SSNET_REQUIRE_SLURM") == "1":
            pytest.fail(f"SSNET_REQUIRE_SLURM=1 but SLURM is not usable: {why_not}")
        pytest.skip(why_not)
    return name

MEMORY_DIVISOR = 16  # profile memory requests scaled down to the CI machine, keeping per-rule differences


def ci_profile(partition: str, cpus: int) -> dict:
    """profiles/slurm with only the site values replaced for the one-node CI cluster."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile.pop("software-deployment-method")  # no conda channels on CI machines: same pins from PyPI
    profile["slurm-init-seconds-before-status-checks"] = 3  # short jobs; MinJobAge 300 >> 3 x 3 s
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_partition" in resources:
            resources["slurm_partition"] = partition
        if "mem_mb" in resources:
            resources["mem_mb"] //= MEMORY_DIVISOR
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(resources["cpus_per_task"], cpus)
    del profile["default-resources"]["slurm_account"]  # no accounts without an accounting database
    # one torch thread, as in the local reference run: the thread count changes float summation order
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    return profile


def _node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=20, check=True)
    return int(out.stdout.split()[0].rstrip("+"))


def _jobs(checkout: Path) -> list[dict]:
    """SLURM jobs of this workflow run (working directory = the checkout)."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%k|%m|%C|%P|%Z"],
                         capture_output=True, text=True, timeout=20, check=True)
    keys = ("id", "state", "comment", "memory", "cpus", "partition", "workdir")
    jobs = [dict(zip(keys, line.split("|"))) for line in out.stdout.splitlines() if line]
    return [job for job in jobs if Path(job["workdir"]) == checkout]


def test_profile_runs_slice_and_scancelled_training_resumes(partition, reference, tmp_path):
    checkout = make_checkout(tmp_path / "checkout")
    profile_dir = tmp_path / "ci-slurm"
    profile_dir.mkdir()
    profile = ci_profile(partition, _node_cpus())
    (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))

    started = time.monotonic()
    workflow = subprocess.Popen(snakemake("--workflow-profile", str(profile_dir)), cwd=checkout,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_progress(checkout / TRAIN_LOG, STOP_AFTER, workflow, timeout=420)
        [train_job] = [j for j in _jobs(checkout) if j["comment"].startswith("rule_train") and j["state"] == "RUNNING"]
        # the profile's per-rule request for `train` reached sbatch
        want = profile["set-resources"]["train"]
        assert (train_job["partition"], train_job["memory"], int(train_job["cpus"])) == (
            partition, f"{want['mem_mb']}M", want["cpus_per_task"]), train_job
        subprocess.run(["scancel", train_job["id"]], check=True, timeout=20)
        stopped_at = last_iteration(checkout / TRAIN_LOG)
        output = finish(workflow, timeout=540)
    finally:
        if workflow.poll() is None:
            workflow.kill()
        leftover = [j["id"] for j in _jobs(checkout) if j["state"] in ("PENDING", "RUNNING")]
        if leftover:
            subprocess.run(["scancel", *leftover], timeout=20)
    seconds = time.monotonic() - started
    assert workflow.returncode == 0, output[-6000:]

    jobs = _jobs(checkout)
    train_jobs = [j for j in jobs if j["comment"].startswith("rule_train")]
    assert [j["state"] for j in sorted(train_jobs, key=lambda j: int(j["id"]))] == ["CANCELLED", "COMPLETED"], jobs
    assert {j["comment"].split("_wildcards")[0] for j in jobs} >= {
        "rule_make_synthetic", "rule_preprocess", "rule_train", "rule_evaluate", "rule_aggregate"}
    assert re.search(r"[Tt]rying to restart job", output)
    assert_resumed(checkout, stopped_at)
    assert_same_run(checkout, reference)
    print(f"SLURM slice with one scancel + retry: {seconds:.0f} s")
