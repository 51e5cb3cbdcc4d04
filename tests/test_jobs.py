"""Job adapters: every failure reaches the job log (on a cluster the log is all that remains)."""

import pytest

from ssnet.errors import DataError
from ssnet.jobs import run_logged


def _fails(exc):
    raise exc


def test_pipeline_error_is_one_line_in_log_and_console(tmp_path, capsys):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        run_logged(str(log), _fails, DataError("missing label file for case X: /data/X/laendo.nrrd"))
    assert stop.value.code == 1
    assert log.read_text() == "ERROR: missing label file for case X: /data/X/laendo.nrrd\n"
    assert "missing label file for case X" in capsys.readouterr().err


def test_any_other_error_leaves_its_traceback_in_the_log(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ZeroDivisionError):
        run_logged(str(log), lambda: 1 / 0)
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError: division by zero" in text
