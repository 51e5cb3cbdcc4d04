"""GPU check: the CUDA path, AMP and the speed switches, in one run of a few minutes on one GPU.

Run through ``benchmarks/gpu_check.sh`` (which checks for a GPU first and keeps the output). Two parts:

1. Training steps (the loop of ``benchmarks/step_time.py``: ``training_step`` under autocast, the
   engine's ``StepContext`` backward with ``GradScaler`` loss scaling, SGD step, ``after_optimizer_step``)
   at the paper sizes: LA 112x112x80 (VNet 16 filters, 2 labelled + 2 unlabelled patches; labelled-only
   batch 4) and ACDC 256x256 (UNet, 12 + 12 slices; labelled-only batch 24), for SS-Net, its reference
   execution (``ssnet-refexec``: one joint backward, nothing recomputed, the reference scripts' VAT and
   separation execution), UA-MT and labelled-only (``supervised``), each with ``amp`` off/on x
   ``channels_last`` off/on under the protocol's kernel settings (``deterministic: true``,
   ``cudnn_benchmark: false``), plus SS-Net with every speed switch on (amp, channels_last,
   cudnn.benchmark, non-deterministic kernels). Per case: iterations/s over the timed iterations, peak
   GPU memory (``torch.cuda.max_memory_allocated``, reset per case), and a NaN/inf check of every logged
   loss term of every iteration (warm-up included), of the weights after the last step, and of the AMP
   gradient scaler (optimizer steps it skipped for non-finite gradients; all skipped = failure).
2. The demo DAG (``configs/demo.yaml`` + ``tests/data/fast_demo.yaml``) with ``device: cuda`` in a scratch
   copy of the project, through train and evaluate: LA ssnet/2/seed1 and ACDC ssnet/1/seed1 with the
   protocol switches, and LA ssnet/2/seed1 again with amp, channels_last and cudnn_benchmark on and two
   DataLoader workers (pinned memory). Each run's ``run_info.json`` must record the device, and its
   ``train_log.csv`` must be finite.

Ends with a summary table; exit status 0 when every case passed, 1 otherwise, 2 without a CUDA device.
``--device cpu --tiny`` runs the same code at tiny sizes on the CPU, only to test the script itself (``amp``
is then a no-op, as in the engine).

    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--warmup 3] [--iterations 10] [--no-dag]
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny --no-dag      # script check, CPU
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from step_time import (CONFIGS, config_run, setup_step, setup_variant, timed_steps,  # noqa: E402  (the step benchmarks'
                       variant_execution)  # settings and loop)

# the step_time.py configurations at the paper sizes, and tiny ones of the same form (--tiny, CPU script check)
PAPER = {"LA": CONFIGS["la-paper"], "ACDC": CONFIGS["acdc-paper"]}
TINY = {
    "LA": {**CONFIGS["la-paper"], "shape": (16, 16, 16), "network": {"arch": "vnet", "n_filters": 2, "dropout": True}},
    "ACDC": {**CONFIGS["acdc-paper"], "shape": (16, 16), "labelled": 2, "unlabelled": 2, "labelled_only": 4,
             "network": {"arch": "unet", "channels": [2, 4, 8, 16, 32]}},
}
# case (a step_time.py variant, or the method type uamt) -> what it is
CASES = {"ssnet": "SS-Net", "ssnet-refexec": "SS-Net, reference execution", "uamt": "UA-MT",
         "labelled-only": "labelled-only (supervised)"}
PROTOCOL_KERNELS = {"deterministic": True, "cudnn_benchmark": False}  # config.yaml's defaults
FAST_KERNELS = {"deterministic": False, "cudnn_benchmark": True}
GRADSCALER_INIT = 2.0 ** 16  # torch.amp.GradScaler's init_scale
# the demo DAG: (name, overlay over configs/demo.yaml + tests/data/fast_demo.yaml, run folders)
DAG_RUNS = [
    ("protocol", {}, ["LA/ssnet/2/seed1", "ACDC/ssnet/1/seed1"]),
    ("speed", {"amp": True, "channels_last": True, "cudnn_benchmark": True,  # + DataLoader workers, pinned memory
               "datasets": {"LA": {"training": {"num_workers": 2}}}}, ["LA/ssnet/2/seed1"]),
]
DAG_MODULES = ["snakemake", "pandas", "h5py", "scipy", "SimpleITK", "medpy", "matplotlib", "jsonschema", "yaml"]
STEP_MODULES = ["torch", "numpy", "yaml", "jsonschema"]  # what the step part imports (requirements.txt)
PROJECT_FILES = ["Snakefile", "config.yaml", "configs", "rules", "scripts", "envs", "ssnet", "resources", "profiles",
                 "report", "tests/data"]  # the workflow's tracked parts (as tests/conftest.py copies them)


# ------------------------------------------------------------------------------------- step cases
def non_finite(records: list[dict]) -> dict[str, list[int]]:
    """{term: [1-based iterations]} of the non-finite values in per-iteration {term: value} records."""
    bad: dict[str, list[int]] = {}
    for iteration, record in enumerate(records, start=1):
        for term, value in record.items():
            if value is None or not math.isfinite(float(value)):
                bad.setdefault(term, []).append(iteration)
    return bad


def run_case(dataset: str, cfg: dict, case: str, amp: bool, channels_last: bool, kernels: dict, args) -> dict:
    """One (dataset, case, amp, channels_last, kernels) measurement; never raises (errors are recorded)."""
    import torch

    from ssnet.seeding import set_deterministic

    cuda = args.device == "cuda"
    result = {"dataset": dataset, "case": case, "amp": amp, "channels_last": channels_last, **kernels,
              "shape": list(cfg["shape"]), "iterations_per_s": None, "median_ms": None, "peak_gib": None,
              "peak_reserved_gib": None, "non_finite": {}, "amp_skipped_steps": None, "error": None,
              "warnings": []}
    set_deterministic(kernels["deterministic"])
    torch.backends.cudnn.benchmark = kernels["cudnn_benchmark"]
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    records: list[dict] = []  # per iteration: every logged term and the loss back-propagated
    scales: list[float] = []  # per iteration: the GradScaler's scale after the step (amp)

    def record(measured: bool, step: dict) -> None:
        records.append({**step["logs"], "loss": step["loss"]})
        if "amp_scale" in step:
            scales.append(step["amp_scale"])

    runtime = "channels-last" if channels_last else "default"
    try:
        with warnings.catch_warnings(record=True) as caught, variant_execution(case):
            warnings.simplefilter("default")
            if case == "uamt":
                params = config_run("uamt", dataset)["params"]
                cfg, method, batch = setup_step(cfg, "uamt", params, args.threads, runtime, args.device)
            else:
                cfg, method, batch = setup_variant(cfg, case, args.threads, runtime, args.device)
            steps, _ = timed_steps(method, batch, args.warmup, args.iterations, 6000, 15000, record,
                                   amp=amp and cuda)  # as the engine: amp is CUDA-only
        result["warnings"] = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}"
                                     for w in caught})
        seconds = [step["total"] for step in steps]
        result["batch"] = int(batch.image.shape[0])
        result["iterations_per_s"] = len(seconds) / sum(seconds)
        result["median_ms"] = statistics.median(seconds) * 1000
        bad = non_finite(records)
        result["non_finite_weights"] = [name for name, t in method.state_dict().items()
                                        if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if result["non_finite_weights"]:
            bad["weights"] = [len(records)]
        result["non_finite"] = bad
        if scales:
            previous = [GRADSCALER_INIT, *scales[:-1]]
            result["amp_skipped_steps"] = sum(now < before for now, before in zip(scales, previous))
            result["amp_final_scale"] = scales[-1]
        if cuda:
            result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        del method, batch, steps
    except Exception as exc:  # noqa: BLE001  (a failed case is a result; the check goes on)
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        result["non_finite"] = non_finite(records)  # the iterations before the error
        traceback.print_exc()
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    result["n_iterations"] = len(records)
    result["failed"] = bool(result["error"] or result["non_finite"]
                            or (result["amp_skipped_steps"] is not None
                                and result["amp_skipped_steps"] == len(records)))
    return result


def step_cases(args) -> list[tuple[str, str, bool, bool, dict]]:
    """(dataset, case, amp, channels_last, kernels) of the run, in order."""
    cases = []
    for dataset in args.datasets:
        for case in args.cases:
            for amp in (False, True):
                for channels_last in (False, True):
                    cases.append((dataset, case, amp, channels_last, PROTOCOL_KERNELS))
        if "ssnet" in args.cases:
            cases.append((dataset, "ssnet", True, True, FAST_KERNELS))
    return cases


def describe_case(r: dict) -> str:
    kernels = "deterministic" if r["deterministic"] else "cudnn.benchmark" if r["cudnn_benchmark"] else "default"
    return (f"{r['dataset']} {r['case']} amp={'on' if r['amp'] else 'off'} "
            f"channels_last={'on' if r['channels_last'] else 'off'} kernels={kernels}")


def nan_column(r: dict) -> str:
    if r.get("error"):
        return f"ERROR ({r['error'].split(':')[0]})"
    parts = [f"{term} ({len(its)}/{r['n_iterations']} it)" if term != "weights" else "weights"
             for term, its in r["non_finite"].items()]
    if r.get("amp_skipped_steps") and r["failed"] and not r["non_finite"]:
        parts.append("gradients (every step skipped)")
    return ", ".join(parts) or "none"


# -------------------------------------------------------------------------------------- demo DAG
def copy_project(target: Path) -> Path:
    for name in PROJECT_FILES:
        source, dest = ROOT / name, target / name
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, dest)
    return target


def run_dag(name: str, overlay: dict, runs: list[str], args, out_dir: Path) -> dict:
    """One demo-DAG invocation in a fresh scratch copy; checks every run's record and training log."""
    import pandas as pd

    from ssnet.config import merge

    result = {"name": name, "overlay": overlay, "runs": [], "error": None, "seconds": None}
    log_file = out_dir / "gpu_check_dag.log"
    missing = [module for module in DAG_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        result["error"] = f"not run: Python packages missing: {', '.join(missing)} (requirements.txt)"
        print(f"\n== DAG ({name}): {result['error']}", flush=True)
        result["failed"] = True
        return result
    with tempfile.TemporaryDirectory(prefix="gpu_check_dag_") as tmp:
        checkout = copy_project(Path(tmp))
        settings = merge({"device": args.device, "seeds": [1],
                          "datasets": {d: {"methods": ["ssnet"]} for d in ("LA", "ACDC")}}, overlay)
        (checkout / "gpu_check.yaml").write_text(yaml.safe_dump(settings))
        targets = [f"results/runs/{run}/test_metrics.csv" for run in runs]
        cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", "configs/demo.yaml",
               "tests/data/fast_demo.yaml", "gpu_check.yaml"]
        print(f"\n== DAG ({name}): {' '.join(cmd[1:])}\n   overlay: {json.dumps(settings)}", flush=True)
        started = time.perf_counter()
        # its own process group, so that a timeout stops snakemake's jobs as well
        process = subprocess.Popen(cmd, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        try:
            output, code = process.communicate(timeout=args.dag_timeout)[0], process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                output = process.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                output = process.communicate()[0]
            code = None
        result["seconds"] = time.perf_counter() - started
        print(f"   snakemake: {result['seconds']:.0f} s, exit code {code}", flush=True)
        job_logs = sorted((checkout / "logs").rglob("*.log")) if (checkout / "logs").exists() else []
        with log_file.open("a") as log:  # snakemake's output and every job's log, both invocations
            log.write(f"==== DAG {name}: {' '.join(cmd[1:])}\n{output}\n")
            for job_log in job_logs:
                log.write(f"---- {job_log.relative_to(checkout)}\n{job_log.read_text()}\n")
        if code != 0:
            result["error"] = (f"snakemake timed out after {args.dag_timeout} s" if code is None
                               else f"snakemake exit code {code}")
            print(output[-4000:])
            for job_log in job_logs:
                print(f"--- {job_log.relative_to(checkout)} (tail)\n{job_log.read_text()[-1500:]}")
        for run in runs:
            folder = checkout / "results" / "runs" / run
            row = {"run": run, "device": None, "amp": None, "channels_last": None, "non_finite": {},
                   "problems": []}
            try:
                missing = [f for f in ("run_info.json", "train_log.csv") if not (folder / f).exists()]
                if missing:
                    raise FileNotFoundError(f"no {' or '.join(missing)}")
                info = json.loads((folder / "run_info.json").read_text())
                row.update(device=info["device"], amp=info["run_config"].get("amp"),
                           channels_last=info["run_config"].get("channels_last"), gpu=info.get("gpu"),
                           train_seconds=info.get("train_seconds"))
                if not str(info["device"]).startswith(args.device):
                    row["problems"].append(f"run_info.json device is {info['device']!r}, not {args.device!r}")
                for key in ("amp", "channels_last", "cudnn_benchmark"):
                    if key in overlay and info["run_config"].get(key) != overlay[key]:
                        row["problems"].append(f"run_info.json {key} is {info['run_config'].get(key)!r}")
                log = pd.read_csv(folder / "train_log.csv")
                numeric = log.select_dtypes("number").drop(columns=["iteration"], errors="ignore")
                row["non_finite"] = non_finite(numeric.to_dict("records"))
                row["run_info"], row["train_log"] = info, log.to_dict("records")  # kept in gpu_check.json
                if (folder / "test_metrics.csv").exists():
                    row["test_metrics"] = pd.read_csv(folder / "test_metrics.csv").to_dict("records")
                else:
                    row["problems"].append("no test_metrics.csv")
            except Exception as exc:  # noqa: BLE001
                row["problems"].append(str(exc) if isinstance(exc, FileNotFoundError) else
                                       f"{type(exc).__name__}: {exc}")
            row["failed"] = bool(row["problems"] or row["non_finite"])
            print(f"   {run}: device {row['device']}, amp {row['amp']}, channels_last {row['channels_last']}, "
                  f"train log NaN/inf: {', '.join(row['non_finite']) or 'none'}"
                  f"{' | ' + '; '.join(row['problems']) if row['problems'] else ''}", flush=True)
            result["runs"].append(row)
    result["failed"] = bool(result["error"] or any(row["failed"] for row in result["runs"]))
    return result


# ----------------------------------------------------------------------------------------- report
def dag_problems(d: dict) -> str:
    problems = [d["error"]] if d["error"] else []
    for row in d["runs"]:
        problems += [f"{row['run']}: {p}" for p in row["problems"]]
        problems += [f"{row['run']}: train log NaN/inf in {', '.join(row['non_finite'])}"] if row["non_finite"] else []
    return "; ".join(problems)


def amp_label(amp: bool, device: str) -> str:
    return ("on" if device == "cuda" else "on (no-op on cpu)") if amp else "off"


def summary(cases: list[dict], dags: list[dict], device: str) -> str:
    ssnet_vs_ref = {}
    for r in cases:
        if r["case"] == "ssnet-refexec" and r["iterations_per_s"]:
            ssnet_vs_ref[(r["dataset"], r["amp"], r["channels_last"], r["deterministic"])] = r["iterations_per_s"]
    lines = ["| case | shape | batch | amp | channels_last | kernels | it/s | median ms/it | vs refexec | "
             "peak GiB | reserved GiB | AMP skipped steps | NaN/inf |",
             "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in cases:
        kernels = "deterministic" if r["deterministic"] else "cudnn.benchmark"
        speed = f"{r['iterations_per_s']:.2f}" if r["iterations_per_s"] else "-"
        median = f"{r['median_ms']:.0f}" if r["median_ms"] else "-"
        ref = ssnet_vs_ref.get((r["dataset"], r["amp"], r["channels_last"], True))
        versus = f"{r['iterations_per_s'] / ref:.2f}x" if r["case"] == "ssnet" and ref and r["iterations_per_s"] \
            else "-"
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else f"- ({device})"
        reserved = f"{r['peak_reserved_gib']:.2f}" if r["peak_reserved_gib"] is not None else "-"
        skipped = "-" if r["amp_skipped_steps"] is None else str(r["amp_skipped_steps"])
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"| {r['dataset']} {r['case']} | {shape} | {r.get('batch', '-')} | "
                     f"{amp_label(r['amp'], device)} | {'on' if r['channels_last'] else 'off'} | {kernels} | "
                     f"{speed} | {median} | {versus} | {peak} | {reserved} | {skipped} | {nan_column(r)} |")
    if dags:
        lines += ["", "| DAG run | switches | run | device (run_info.json) | amp | channels_last | train s | "
                      "NaN/inf (train log) | status |",
                  "|---|---|---|---|---|---|---:|---|---|"]
        for d in dags:
            switches = ", ".join(f"{k}={v}" for k, v in d["overlay"].items() if k != "datasets")
            switches += ", num_workers=2" if "datasets" in d["overlay"] else ""
            switches = switches or "config defaults"
            for row in d["runs"] or [{"run": "-", "problems": [], "non_finite": {}, "failed": True}]:
                status = "; ".join(filter(None, [d["error"], *row["problems"]])) or ("FAIL" if row["failed"] else "ok")
                train = f"{row['train_seconds']:.1f}" if row.get("train_seconds") else "-"
                device = f"{row.get('device')}" + (f" (GPU {row['gpu']})" if row.get("gpu") is not None else "")
                lines.append(f"| {d['name']} | {switches} | {row['run']} | {device} | {row.get('amp')} | "
                             f"{row.get('channels_last')} | {train} | {', '.join(row['non_finite']) or 'none'} | "
                             f"{status} |")
    return "\n".join(lines)


def environment(device: str) -> dict:
    import torch

    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "device": device}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}", gpus_visible=torch.cuda.device_count(),
                    cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu only checks the script itself (use with --tiny); the figures are meant for cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and networks (script check on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default 3; --tiny 1)")
    parser.add_argument("--iterations", type=int, help="timed iterations (default 10; --tiny 1)")
    parser.add_argument("--datasets", nargs="+", default=["LA", "ACDC"], choices=["LA", "ACDC"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: 4 on cuda, at most the CPU count; 1 on cpu)")
    parser.add_argument("--no-dag", action="store_true", help="skip the end-to-end demo DAG")
    parser.add_argument("--dag-timeout", type=int, default=300, help="seconds per DAG invocation")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check",
                        help="folder for gpu_check.json, gpu_check_summary.md and gpu_check_dag.log")
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.iterations = args.iterations if args.iterations is not None else (1 if args.tiny else 10)
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be at least 1 and --warmup at least 0")
    if args.threads is None:
        args.threads = min(4, os.cpu_count() or 1) if args.device == "cuda" else 1

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device visible to torch {torch.__version__} (built with CUDA "
              f"{torch.version.cuda}); this check needs one NVIDIA GPU - nothing was run "
              "(--device cpu --tiny checks the script only)", file=sys.stderr)
        return 2
    missing = [module for module in STEP_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        print(f"gpu_check: Python packages missing for the training steps: {', '.join(missing)} "
              f"({sys.executable}; see requirements.txt)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check_dag.log").unlink(missing_ok=True)
    env = environment(args.device)
    print("gpu_check: " + " | ".join(f"{k} {v}" for k, v in env.items() if v is not None), flush=True)
    configs = TINY if args.tiny else PAPER
    plan = step_cases(args)
    print(f"== training steps: {len(plan)} cases, {args.warmup} warm-up + {args.iterations} timed iterations "
          f"each ({'tiny' if args.tiny else 'paper'} sizes)", flush=True)
    started = time.perf_counter()
    cases = []
    for dataset, case, amp, channels_last, kernels in plan:
        r = run_case(dataset, configs[dataset], case, amp, channels_last, kernels, args)
        cases.append(r)
        speed = f"{r['iterations_per_s']:.2f} it/s" if r["iterations_per_s"] else "-"
        peak = f", peak {r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else ""
        skipped = f", AMP skipped {r['amp_skipped_steps']}" if r["amp_skipped_steps"] is not None else ""
        print(f"{describe_case(r)}: {speed}{peak}{skipped}, NaN/inf: {nan_column(r)}"
              f"{' | ' + r['error'] if r['error'] else ''}", flush=True)
    steps_seconds = time.perf_counter() - started
    print(f"== training steps: {steps_seconds:.0f} s", flush=True)
    dags = [] if args.no_dag else [run_dag(name, overlay, runs, args, args.out) for name, overlay, runs in DAG_RUNS]
    warned = sorted({w for r in cases for w in r["warnings"]})
    failures = [f"{describe_case(r)}: {r['error'] or nan_column(r)}" for r in cases if r["failed"]] + \
               [f"DAG {d['name']}: {dag_problems(d)}" for d in dags if d["failed"]]
    report = {"environment": env, "warmup": args.warmup, "iterations": args.iterations, "tiny": args.tiny,
              "steps_seconds": steps_seconds, "cases": cases, "dag": dags, "warnings": warned,
              "failures": failures}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    table = summary(cases, dags, args.device)
    (args.out / "gpu_check_summary.md").write_text(table + "\n")
    if warned:
        print(f"\nwarnings raised during the steps ({len(warned)} distinct):")
        for w in warned:
            print(f"  {w}")
    print(f"\n== summary ({env.get('gpu', args.device)}, torch {env['torch']}; it/s over {args.iterations} timed "
          f"iterations after {args.warmup} warm-up; peak = torch.cuda.max_memory_allocated per case; "
          f"NaN/inf: every logged loss term of every iteration, the weights after the last step)\n")
    print(table)
    print(f"\nresults: {args.out / 'gpu_check.json'}")
    if failures:
        print(f"gpu_check: FAILED ({len(failures)}): " + "; ".join(failures))
        return 1
    print(f"gpu_check: OK ({len(cases)} step cases{f', {len(dags)} DAG invocations' if dags else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
