"""The jobs' memory allocator (ssnet.allocator): which one a config block asks for, the environment that
loads it, a job process re-executing itself under it, the job server's matching, and the same results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_run_config
from ssnet import allocator, jobserver
from ssnet.allocator import Allocator, preload_environment, restore_environment, wanted_allocator
from ssnet.errors import ConfigError

SYSTEM_JEMALLOC = allocator.find_jemalloc()


@pytest.fixture
def system_jemalloc() -> Path:
    """The installed jemalloc; skips without one (fails under SSNET_REQUIRE_JEMALLOC=1, as .ci/run sets)."""
    if SYSTEM_JEMALLOC is None:
        message = "no libjemalloc.so.2 installed (Debian/Ubuntu: apt-get install libjemalloc2)"
        if os.environ.get("SSNET_REQUIRE_JEMALLOC") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return SYSTEM_JEMALLOC

BLOCK = {"library": "auto", "jemalloc_path": None, "jemalloc_decay_ms": -1,
         "mmap_threshold_mb": 2047, "trim_threshold_mb": 2047}


def test_wanted_allocator_follows_the_config_block(tmp_path, monkeypatch):
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    assert wanted_allocator({**BLOCK, "library": "glibc", "jemalloc_path": str(library)}) == Allocator("glibc")
    assert wanted_allocator({**BLOCK, "jemalloc_path": str(library), "jemalloc_decay_ms": 5000}) == \
        Allocator("jemalloc", str(library), 5000)
    with pytest.raises(ConfigError, match="cpu_allocator.jemalloc_path: .*missing.so is not a file"):
        wanted_allocator({**BLOCK, "jemalloc_path": str(tmp_path / "missing.so")})
    monkeypatch.setattr(allocator, "jemalloc_search_path", lambda: [tmp_path / "nowhere" / "libjemalloc.so.2"])
    assert wanted_allocator(BLOCK) == Allocator("glibc")  # auto: glibc where jemalloc is missing
    with pytest.raises(ConfigError, match="cpu_allocator.library is jemalloc .*apt-get install libjemalloc2"):
        wanted_allocator({**BLOCK, "library": "jemalloc"})
    monkeypatch.setattr(allocator, "jemalloc_search_path", lambda: [library])
    assert wanted_allocator({**BLOCK, "library": "jemalloc"}).path == str(library)
    assert wanted_allocator({"mmap_threshold_mb": 2047, "trim_threshold_mb": 2047}) == Allocator("glibc")  # old runs


def test_the_workflow_says_when_auto_finds_no_jemalloc(tmp_path, monkeypatch):
    library = tmp_path / "libjemalloc.so.2"
    monkeypatch.setattr(allocator, "jemalloc_search_path", lambda: [library])
    notice = allocator.missing_jemalloc_notice(BLOCK)
    assert "libjemalloc.so.2 not found, jobs run glibc malloc" in notice and "recompute: all" in notice
    assert allocator.missing_jemalloc_notice({**BLOCK, "library": "glibc"}) is None  # glibc asked for
    library.write_bytes(b"")
    assert allocator.missing_jemalloc_notice(BLOCK) is None


def test_preload_environment_and_its_undoing(monkeypatch):
    jemalloc = Allocator("jemalloc", "/opt/lib/libjemalloc.so.2", -1)
    user = {"LD_PRELOAD": "libfoo.so:/usr/lib/libjemalloc.so.2", "MALLOC_CONF": "narenas:2", "HOME": "/h"}
    env = preload_environment(jemalloc, user)
    assert env["LD_PRELOAD"] == "/opt/lib/libjemalloc.so.2 libfoo.so"  # one jemalloc, first
    assert env["MALLOC_CONF"] == "narenas:2,dirty_decay_ms:-1,muzzy_decay_ms:-1"  # later options win
    assert env["HOME"] == "/h"
    glibc = preload_environment(Allocator("glibc"), user)
    assert glibc["LD_PRELOAD"] == "libfoo.so" and glibc["MALLOC_CONF"] == "narenas:2"
    assert "LD_PRELOAD" not in preload_environment(Allocator("glibc"), {"LD_PRELOAD": "/x/libjemalloc.so.2"})
    for name in ("LD_PRELOAD", "MALLOC_CONF", allocator.REEXEC_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_CONF", "narenas:2")
    assert restore_environment() is False
    for name, value in preload_environment(jemalloc, dict(os.environ)).items():
        monkeypatch.setenv(name, value)
    assert restore_environment() is True
    assert os.environ.get("MALLOC_CONF") == "narenas:2" and "LD_PRELOAD" not in os.environ
    assert allocator.REEXEC_VARIABLE not in os.environ


PROBE = """
import json, os, sys
from ssnet import allocator
block = json.loads(sys.argv[1])
allocator.ensure_allocator(allocator.wanted_allocator(block), required=block["library"] == "jemalloc")
print(json.dumps({"pid": os.getpid(), "malloc": allocator.describe_allocator(),
                  "LD_PRELOAD": os.environ.get("LD_PRELOAD"), "MALLOC_CONF": os.environ.get("MALLOC_CONF")}))
"""


def _probe(tmp_path, block, **env):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    process = subprocess.Popen([sys.executable, str(script), json.dumps(block)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**_clean_environment(), "PYTHONPATH": str(ROOT), **env})
    out, err = process.communicate(timeout=120)
    return process.pid, process.returncode, (json.loads(out) if process.returncode == 0 else None), err


def _clean_environment():
    skip = ("LD_PRELOAD", "MALLOC_CONF", allocator.REEXEC_VARIABLE, jobserver.ADDRESS_VARIABLE)
    return {name: value for name, value in os.environ.items() if name not in skip}


def test_a_job_process_reexecutes_itself_under_jemalloc_and_restores_its_environment(tmp_path, system_jemalloc):
    pid, code, seen, err = _probe(tmp_path, BLOCK, MALLOC_CONF="narenas:2")
    assert code == 0, err
    assert seen["pid"] == pid  # the same process (what Snakemake waits for), re-executed
    assert seen["malloc"].startswith("jemalloc ") and seen["malloc"].endswith("(dirty_decay_ms -1)")
    assert seen["LD_PRELOAD"] is None and seen["MALLOC_CONF"] == "narenas:2"  # the job's subprocesses: as before
    _, code, seen, err = _probe(tmp_path, {**BLOCK, "library": "glibc"}, LD_PRELOAD=str(system_jemalloc))
    assert code == 0, err
    assert seen["malloc"].startswith("glibc") and seen["LD_PRELOAD"] == str(system_jemalloc)


def test_a_library_that_does_not_load_is_a_warning_or_an_error(tmp_path):
    broken = tmp_path / "libjemalloc.so.2"
    broken.write_bytes(b"not a library")
    _, code, seen, err = _probe(tmp_path, {**BLOCK, "jemalloc_path": str(broken)})
    assert code == 0 and seen["malloc"].startswith("glibc"), err
    assert "WARNING: cpu_allocator: jemalloc" in err and "could not be loaded at process start" in err
    _, code, _, err = _probe(tmp_path, {**BLOCK, "library": "jemalloc", "jemalloc_path": str(broken)})
    assert code != 0 and "could not be loaded at process start" in err


def test_apply_cpu_allocator_reports_the_allocator(monkeypatch):
    lines = []
    monkeypatch.setattr(allocator, "configure_malloc", lambda *args: {"M_MMAP_THRESHOLD": args[0] << 20})
    assert allocator.apply_cpu_allocator({"cpu_allocator": {**BLOCK, "library": "jemalloc"}}, lines.append) == \
        {"M_MMAP_THRESHOLD": 2047 << 20}  # this test process runs glibc
    assert lines[0].startswith("WARNING: cpu_allocator.library is jemalloc, but this process was started with glibc")
    assert lines[1].startswith("memory allocator: glibc") and lines[1].endswith("(M_MMAP_THRESHOLD 2047 MiB)")


RUN_JOB = """
import json, sys
from types import SimpleNamespace
from ssnet.engine.run_info import RunOutputs
from ssnet.jobs import run_job
cfg, data, out, block = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
smk = SimpleNamespace(log=[out + "/train.log"], rule="train", wildcards=SimpleNamespace(items=lambda: []), attempt=1)
run_job(smk, "ssnet.engine.trainer:train", cfg, 3, data,
        RunOutputs(*(f"{out}/{name}" for name in ("model.pt", "train_log.csv", "val_log.csv", "run_info.json"))),
        out + "/checkpoints", allocator=block)
"""


def test_training_is_bit_identical_under_jemalloc_and_glibc(preprocessed, tmp_path, system_jemalloc):
    """A training job (ssnet.jobs.run_job, as scripts/train.py runs it) under each allocator: same weights."""
    script = tmp_path / "job.py"
    script.write_text(RUN_JOB)
    cfg = tiny_run_config("LA", method="ssnet", iterations=4)
    states, versions = {}, {}
    for library in ("glibc", "jemalloc"):
        out = tmp_path / library
        out.mkdir()
        block = {**BLOCK, "library": library}
        subprocess.run([sys.executable, str(script), json.dumps({**cfg, "cpu_allocator": block}),
                        str(preprocessed["LA"]), str(out), json.dumps(block)], check=True, cwd=ROOT,
                       env={**_clean_environment(), "PYTHONPATH": str(ROOT)}, timeout=300)
        states[library] = torch.load(out / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
        versions[library] = json.loads((out / "run_info.json").read_text())["versions"]["malloc"]
        assert "memory allocator: " + versions[library] in (out / "train.log").read_text()
    assert versions["glibc"].startswith("glibc") and versions["jemalloc"].startswith("jemalloc")
    assert states["glibc"].keys() == states["jemalloc"].keys()
    for name, tensor in states["glibc"].items():
        assert torch.equal(tensor, states["jemalloc"][name]), name


def test_job_server_serves_only_jobs_of_its_allocator(tmp_path, monkeypatch, system_jemalloc):
    """Started under the workflow's allocator (jemalloc here), the server forks jobs that run it; a job asking
    for glibc gets no answer and runs itself."""
    for name in ("LD_PRELOAD", "MALLOC_CONF", jobserver.ADDRESS_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    server = jobserver.start(ROOT, log=lambda line: None, allocator=BLOCK)
    try:
        assert jobserver.wait_until_ready(120), "the job server did not start"
        monkeypatch.chdir(tmp_path)
        log = {"log": str(tmp_path / "job.log")}
        record = ("import os; from ssnet import allocator; "
                  "open('seen.json', 'w').write(repr((allocator.describe_allocator(), os.environ.get('LD_PRELOAD'))))")
        assert jobserver.submit("builtins:exec", log, (record,), {}, wanted_allocator(BLOCK)) == 0
        malloc, preload = eval(Path("seen.json").read_text())
        assert malloc.startswith("jemalloc") and preload is None  # the job's own environment
        assert jobserver.submit("builtins:exec", log, (record,), {}, Allocator("glibc")) is None
        # a job process asking for glibc, started under jemalloc: declined by the server, it re-executes itself
        # once without jemalloc and runs the job in its own process
        script = tmp_path / "job.py"
        script.write_text(JOB_ASKING.format(record=repr(record.replace("seen.json", "job.json"))))
        environment = {**_clean_environment(), "PYTHONPATH": str(ROOT), "LD_PRELOAD": str(system_jemalloc),
                       jobserver.ADDRESS_VARIABLE: os.environ[jobserver.ADDRESS_VARIABLE]}
        command = [sys.executable, str(script), str(tmp_path / "job.log"), json.dumps({**BLOCK, "library": "glibc"})]
        job = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert job.returncode == 0, job.stderr
        malloc, preload = eval(Path("job.json").read_text())
        assert malloc.startswith("glibc") and preload == str(system_jemalloc)  # its own environment back
    finally:
        jobserver.stop(server)


JOB_ASKING = """
import json, sys
from types import SimpleNamespace
from ssnet.jobs import run_job
smk = SimpleNamespace(log=[sys.argv[1]], rule="probe", wildcards=SimpleNamespace(items=lambda: []), attempt=1)
run_job(smk, "builtins:exec", {record}, allocator=json.loads(sys.argv[2]))
"""

