"""benchmarks/gpu_check.sh / gpu_check.py: the GPU check's own logic, on a machine without a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _path_without_nvidia_smi() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not (Path(d) / "nvidia-smi").exists())


def _run_script(tmp_path, path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)


def test_without_a_gpu_it_stops_at_once_with_exit_code_2(tmp_path):
    done = _run_script(tmp_path, _path_without_nvidia_smi())
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu_check: no CUDA device visible to torch") and "needs one NVIDIA GPU" in lines[0]
    assert "nvidia-smi: not found" in lines[0] and "nothing was run" in lines[0]
    assert done.stdout == ""
    assert (tmp_path / "out" / "gpu_check.log").read_text().strip() == lines[0]  # kept for a lent machine


def test_an_nvidia_smi_listing_no_gpu_stops_before_torch(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    (fake / "nvidia-smi").chmod(0o755)
    done = _run_script(tmp_path, os.pathsep.join([str(fake), _path_without_nvidia_smi()]))
    assert done.returncode == 2
    assert done.stderr.strip() == ("gpu_check: nvidia-smi -L lists no GPU - this check needs one NVIDIA GPU; "
                                   "nothing was run")


def test_python_part_without_cuda_exits_2(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device visible to torch" in done.stderr


def test_tiny_cpu_mode_lists_every_case_with_a_nan_check(tmp_path):
    """The script's logic at tiny sizes on the CPU (1 warm-up + 1 timed iteration per case, no DAG)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--no-dag", "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu_check: OK (34 step cases)" in done.stdout
    table = done.stdout[done.stdout.index("== summary"):]
    header = next(line for line in table.splitlines() if line.startswith("| case |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for name in ("case", "amp", "channels_last", "it/s", "peak GiB", "NaN/inf"):
        assert name in columns, header
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith(("| LA ", "| ACDC "))]
    seen = {(row[0], row[columns.index("amp")].split()[0], row[columns.index("channels_last")],
             row[columns.index("kernels")]) for row in rows}
    expected = {(f"{dataset} {case}", amp, cl, "deterministic") for dataset in ("LA", "ACDC")
                for case in gpu_check.CASES for amp in ("off", "on") for cl in ("off", "on")}
    expected |= {(f"{dataset} ssnet", "on", "on", "cudnn.benchmark") for dataset in ("LA", "ACDC")}
    assert seen == expected and len(rows) == len(expected) == 34
    for row in rows:
        assert row[columns.index("NaN/inf")] == "none", row
        assert float(row[columns.index("it/s")]) > 0, row
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(report["cases"]) == 34 and report["failures"] == []
    # every iteration's logged terms were checked: the SS-Net cases log the smoothness term
    assert all(case["n_iterations"] == 2 for case in report["cases"])
    assert (tmp_path / "gpu_check_summary.md").read_text().startswith("| case |")


def test_non_finite_terms_are_reported_per_term_and_iteration():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    bad = gpu_check.non_finite([{"loss": 1.0, "loss_smooth": float("nan")},
                                {"loss": float("inf"), "loss_smooth": float("nan")}, {"loss": 0.5}])
    assert bad == {"loss_smooth": [1, 2], "loss": [2]}
    row = {"error": None, "non_finite": bad, "n_iterations": 3, "amp_skipped_steps": 0, "failed": True}
    assert gpu_check.nan_column(row) == "loss_smooth (2/3 it), loss (1/3 it)"
    assert gpu_check.nan_column({**row, "non_finite": {}, "failed": False}) == "none"
