"""The local job server (ssnet.jobserver): a job handed to it runs in a forked child with the job's working
directory and environment, reports its exit status and writes its log as an in-process job would; without
a usable server the job runs itself."""

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from ssnet import jobserver
from ssnet.jobs import run_job, usage_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for(path, seconds=60):
    """Wait until ``path`` exists (a served job has started: its log, or a file it writes in one step)."""
    deadline = time.monotonic() + seconds
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.is_file(), f"{path} did not appear within {seconds} s"
    time.sleep(0.3)  # the job process installs its signal forwarding right after the child answers


def _gone_within(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _job_process(function, log, args, **popen):
    """A job process (as scripts/*.py run) handing ``function(*args)`` to the server of its environment."""
    code = (f"import sys; from ssnet import jobserver; "
            f"sys.exit(jobserver.submit({function!r}, {{'log': {str(log)!r}}}, {args!r}, {{}}))")
    return subprocess.Popen([sys.executable, "-c", code], **{"env": dict(os.environ, PYTHONPATH=ROOT), **popen})


def _snakemake(log):
    return SimpleNamespace(log=[str(log)], rule="check", wildcards=SimpleNamespace(items=lambda: [("dataset", "LA")]),
                           attempt=1)


@pytest.fixture(scope="module")
def server():
    saved = os.environ.get(jobserver.ADDRESS_VARIABLE)
    process = jobserver.start(ROOT, log=lambda line: None)
    assert jobserver.wait_until_ready(120), "the job server did not start"
    yield process
    jobserver.stop(process)
    assert process.poll() is not None and not os.environ.get(jobserver.ADDRESS_VARIABLE)
    if saved is not None:
        os.environ[jobserver.ADDRESS_VARIABLE] = saved


def test_job_runs_in_the_server_with_the_jobs_directory_and_environment(server, tmp_path, monkeypatch):
    assert os.getsid(server.pid) == server.pid  # its own session: a terminal's Ctrl-C reaches the jobs only
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSNET_TEST_VALUE", "from-the-job")
    log = tmp_path / "job.log"
    code = jobserver.submit("ssnet.io:write_json", {"log": str(log), "rule": "check"}, ("out.json", {"a": 1}), {})
    assert code == 0
    assert (tmp_path / "out.json").read_text().strip().startswith("{")  # relative path: the job's directory
    check = 'test "$SSNET_TEST_VALUE" = from-the-job && test -f out.json'
    assert jobserver.submit("subprocess:check_call", {"log": str(log)}, (["sh", "-c", check],), {}) == 0
    monkeypatch.setenv("SSNET_TEST_VALUE", "changed")  # the child sees the job's environment of the moment
    assert jobserver.submit("subprocess:check_call", {"log": str(log)}, (["sh", "-c", check],), {}) == 1
    assert "CalledProcessError" in log.read_text()


def test_failures_reach_the_log_and_the_exit_status(server, tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        run_job(_snakemake(log), "ssnet.config:load_config", [str(tmp_path / "missing.yaml")])
    assert stop.value.code == 1
    assert log.read_text().startswith("ERROR in rule check (dataset=LA): ")
    assert "missing.yaml" in log.read_text()


def test_signals_reach_the_child(server, tmp_path):
    """SIGTERM to the job (what SLURM or Snakemake sends) stops the forked child too."""
    log = tmp_path / "job.log"
    client = _job_process("time:sleep", log, (60,))
    _wait_for(log)
    started = time.monotonic()
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) != 0
    assert time.monotonic() - started < 30


def test_a_job_process_killed_outright_takes_its_child_with_it(server, tmp_path):
    """SIGKILL cannot be forwarded: the child notices its job process is gone and stops, so a retry of the
    job does not run beside the first attempt, and it writes no usage file after the retry removed it."""
    log, pid_file, done = tmp_path / "job.log", tmp_path / "child.pid", tmp_path / "done"
    work = (f"import os, time\nopen('pid.tmp', 'w').write(str(os.getpid()))\nos.replace('pid.tmp', {str(pid_file)!r})\n"
            f"time.sleep(60)\nopen({str(done)!r}, 'w')")
    client = _job_process("builtins:exec", log, (work, {}), cwd=tmp_path)
    try:
        _wait_for(pid_file)
    finally:
        client.kill()
        client.wait()
    child = int(pid_file.read_text())
    assert child != client.pid
    if not _gone_within(child, 10):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the job server's child outlived its killed job process")
    assert not done.exists() and not usage_path(log).exists()


def test_the_child_records_its_own_usage_next_to_the_log(server, tmp_path):
    """Snakemake's benchmark measures the waiting job process; the child writes what it used itself."""
    idle, busy = tmp_path / "idle.log", tmp_path / "busy.log"
    run_job(_snakemake(idle), "builtins:exec", "pass", {})
    burn = "import time\nx = b'1' * (300 << 20)\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    run_job(_snakemake(busy), "builtins:exec", burn, {})
    idle_usage, busy_usage = (json.loads(usage_path(log).read_text()) for log in (idle, busy))
    # the child starts from the server's resident pages (torch imported): compare with a job that does nothing
    assert busy_usage["max_rss_mb"] - idle_usage["max_rss_mb"] > 250
    assert busy_usage["cpu_s"] >= 0.5 > idle_usage["cpu_s"]


def test_no_server_means_the_job_runs_itself(tmp_path, monkeypatch):
    monkeypatch.setenv(jobserver.ADDRESS_VARIABLE, str(tmp_path / "no-such.sock"))
    assert jobserver.submit("ssnet.io:write_json", {"log": str(tmp_path / "l")}, (str(tmp_path / "x.json"), 1), {}) is None
    usage_path(tmp_path / "job.log").write_text("{}")  # from an earlier run through a server
    run_job(_snakemake(tmp_path / "job.log"), "ssnet.io:write_json", str(tmp_path / "x.json"), {"b": 2})
    assert (tmp_path / "x.json").is_file() and not usage_path(tmp_path / "job.log").exists()


def test_server_exits_with_the_workflow_process(tmp_path):
    """A killed Snakemake (no onerror handler runs) leaves no server behind."""
    script = ("import os, sys, time; sys.path.insert(0, %r); from ssnet import jobserver; "
              "p = jobserver.start(%r, log=lambda l: None); print(p.pid, flush=True); time.sleep(600)") % (ROOT, ROOT)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    time.sleep(1)
    parent.kill()
    parent.wait()
    if not _gone_within(server_pid, 30):
        os.kill(server_pid, signal.SIGKILL)
        pytest.fail("the job server outlived its parent")


def test_ctrl_c_stops_the_jobs_and_leaves_the_server_to_the_workflow(tmp_path, monkeypatch):
    """Ctrl-C in a terminal reaches every process of the workflow: the server ignores it (Snakemake stops it,
    or its death does) and prints nothing; a served job stops as it would in its own process."""
    def interruptible():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    address = str(tmp_path / "server.sock")
    environment = dict(os.environ, PYTHONPATH=ROOT, **{jobserver.ADDRESS_VARIABLE: address})
    server = subprocess.Popen([sys.executable, "-m", "ssnet.jobserver", address], stderr=subprocess.PIPE, text=True,
                              env=environment, preexec_fn=interruptible)
    try:
        monkeypatch.setenv(jobserver.ADDRESS_VARIABLE, address)
        assert jobserver.wait_until_ready(120), "the job server did not start"
        server.send_signal(signal.SIGINT)
        time.sleep(1)
        assert server.poll() is None and jobserver.wait_until_ready(10)
        log = tmp_path / "job.log"
        client = _job_process("time:sleep", log, (60,), env=environment, preexec_fn=interruptible)
        try:
            _wait_for(log)
            client.send_signal(signal.SIGINT)
            assert client.wait(timeout=30) == 1
        finally:
            client.kill()
        assert "KeyboardInterrupt" in log.read_text()
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr  # the job's own ERROR line goes to the console, as it should


IMPORTS_AFTER_PRELOAD = """
import json, sys
from ssnet import jobserver
jobserver.import_job_modules()
before = set(sys.modules)
from ssnet.engine.run_info import RunOutputs
from ssnet.engine.trainer import train
from ssnet.evaluation.evaluate import evaluate_run
run, data, out = json.loads(sys.argv[1])
outputs = RunOutputs(*(f"{out}/{name}" for name in ("model.pt", "train.csv", "val.csv", "info.json")))
train(run, 1, data, outputs, f"{out}/checkpoints")
evaluate_run(outputs.model, data, f"{out}/metrics.csv")
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_preloaded_modules_cover_what_training_and_evaluation_import(preprocessed, tmp_path, dataset):
    """A job forked from the server pays for every module it imports itself: training and evaluation
    import nothing beyond what the server imports (``import_job_modules``; codec lookups aside)."""
    import json
    from conftest import tiny_run_config

    run = tiny_run_config(dataset, "ssnet", "2" if dataset == "LA" else "1")
    args = json.dumps([run, str(preprocessed[dataset]), str(tmp_path)])
    done = subprocess.run([sys.executable, "-c", IMPORTS_AFTER_PRELOAD, args], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    imported = [m for m in json.loads(done.stdout.splitlines()[-1]) if not m.startswith("encodings.")]
    assert imported == [], imported
