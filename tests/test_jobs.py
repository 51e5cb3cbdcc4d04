"""Job adapters: every failure reaches the job log (on a cluster the log is all that remains) as one
paragraph naming the rule and wildcards, once on the console; bad input is not retried."""

from types import SimpleNamespace

import pytest

from ssnet.errors import ConfigError, DataError
from ssnet.jobs import Job, run_job, run_logged, warn


def _fails(exc):
    raise exc


def _snakemake(log, attempt=1):
    """The parts of Snakemake's ``snakemake`` object that a job adapter reads."""
    wildcards = SimpleNamespace(items=lambda: [("dataset", "LA"), ("method", "ssnet")])
    return SimpleNamespace(log=[str(log)], rule="train", wildcards=wildcards, attempt=attempt)


def test_pipeline_error_is_one_paragraph_with_rule_and_wildcards(tmp_path, capsys):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        run_job(_snakemake(log), _fails, DataError("missing label file for case X: /data/X/laendo.nrrd"))
    assert stop.value.code == 1
    paragraph = ("ERROR in rule train (dataset=LA, method=ssnet): missing label file for case X: "
                 "/data/X/laendo.nrrd\n")
    assert log.read_text() == paragraph
    assert capsys.readouterr().err == paragraph  # the console shows it once


def test_any_other_error_leaves_paragraph_then_traceback_in_the_log(tmp_path, capsys):
    log = tmp_path / "job.log"
    with pytest.raises(ZeroDivisionError):
        run_job(_snakemake(log), lambda: 1 / 0)
    text = log.read_text()
    assert text.startswith("ERROR in rule train (dataset=LA, method=ssnet): ZeroDivisionError: division by zero\n")
    assert "Traceback" in text
    assert capsys.readouterr().err.count("ZeroDivisionError") == 1


def test_config_error_inside_a_job_reaches_the_log(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit):
        run_logged(str(log), _fails, ConfigError("config key training.lr = -1 is not allowed: it must be > 0"))
    assert "training.lr = -1" in log.read_text()


def test_a_retry_after_bad_input_stops_at_once(tmp_path, capsys):
    log, calls = tmp_path / "job.log", []

    def bad_input():
        calls.append(1)
        raise DataError("truncated h5 file /x.h5")

    with pytest.raises(SystemExit):
        run_job(_snakemake(log, attempt=1), bad_input)
    with pytest.raises(SystemExit) as stop:
        run_job(_snakemake(log, attempt=2), bad_input)
    assert stop.value.code == 1 and len(calls) == 1  # the retry did not redo the work
    assert "not retried (attempt 2)" in log.read_text() and "truncated h5 file /x.h5" in log.read_text()
    capsys.readouterr()
    assert run_job(_snakemake(log, attempt=1), lambda: 7) == 7  # a new run starts afresh
    assert not Job(str(log)).marker.exists()


def test_a_retry_after_a_transient_failure_runs_again(tmp_path):
    log, calls = tmp_path / "job.log", []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("out of memory")
        return "done"

    with pytest.raises(MemoryError):
        run_job(_snakemake(log, attempt=1), flaky)
    assert run_job(_snakemake(log, attempt=2), flaky) == "done" and len(calls) == 2


def test_warnings_reach_log_and_console(tmp_path, capsys):
    log = tmp_path / "job.log"
    run_logged(str(log), warn, "LA case X has 44 slices, not 88")
    assert log.read_text() == "WARNING: LA case X has 44 slices, not 88\n"
    assert capsys.readouterr().err == "WARNING: LA case X has 44 slices, not 88\n"
    warn("outside a job")  # stderr only, once
    assert capsys.readouterr().err == "WARNING: outside a job\n"


def test_only_training_and_evaluation_are_retried():
    """Per-rule retries: every rule but train/evaluate sets ``retries: 0`` (its failures are bad input or
    config), so the profiles' ``retries`` apply to the jobs that a second attempt can fix."""
    import re

    from conftest import ROOT

    transient = {"train", "evaluate", "evaluate_released"}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), flags=re.M):
            retries = re.search(r"^    retries: (\d+)", body, flags=re.M)
            if name in transient:
                assert retries is None, f"{path.name}: rule {name} must take the profile's retries"
            else:
                assert retries and retries.group(1) == "0", f"{path.name}: rule {name} needs retries: 0"
