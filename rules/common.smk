# Configuration checks and the named helpers that rules use for inputs, params and resources.
import functools
import os
import sys
from pathlib import Path
from types import SimpleNamespace

# The workflow imports the project package from this checkout (scripts do so via scripts/_project.py).
sys.path.insert(0, workflow.basedir)

from ssnet.config import enabled_datasets, resolve_config, run_config  # noqa: E402
from ssnet.data.fingerprint import check_settings, fingerprint_target  # noqa: E402
from ssnet.datasets import DATASETS as REGISTERED_DATASETS, get_dataset  # noqa: E402
from ssnet.devices import (
    DEVICE_ENV,
    export,
    gpu_job_limit,
    resolve_device,
)  # noqa: E402
from ssnet.errors import ConfigError  # noqa: E402
from ssnet.report.targets import report_targets  # noqa: E402
from ssnet.workflow import run_path, runs_of  # noqa: E402


def _stop(message):
    """End the workflow with a one-paragraph explanation instead of a traceback."""
    print(f"\nERROR: {message}\n", file=sys.stderr)
    sys.exit(1)


# The resolved configuration (every default applied, method variants resolved, values checked against
# the datasets and their split lists) replaces the merged config files for every rule.
try:
    config.update(resolve_config(config))
except ConfigError as exc:
    _stop(f"invalid configuration: {exc}")

DATASETS = enabled_datasets(config)

# The device is decided once, here, for the whole DAG (auto: cuda when the submit host sees a GPU);
# every job inherits the decision (ssnet.devices), and the runs record the resolved value.
FIRST_PARSE = (
    DEVICE_ENV not in os.environ
)  # jobs re-parsing the workflow inherit SSNET_DEVICE
DEVICE = resolve_device(config["device"])
export(DEVICE, config["gpu_jobs_per_device"])
config["device"] = DEVICE.device
if FIRST_PARSE:
    print(DEVICE.describe(), file=sys.stderr)


def _limit_gpu_jobs():
    """At most GPUs x gpu_jobs_per_device GPU jobs at once on a workstation (ssnet.devices)."""
    slots = gpu_job_limit(
        DEVICE,
        config["gpu_jobs_per_device"],
        local=workflow.global_resources["_nodes"].value is None,
        user_set="gpu" in workflow.global_resources,
    )
    if slots is not None:
        workflow.register_resource("gpu", slots)
        if FIRST_PARSE:
            print(
                f"GPU jobs: at most {slots} at once ({len(DEVICE.gpus)} GPUs x "
                f"gpu_jobs_per_device {config['gpu_jobs_per_device']})",
                file=sys.stderr,
            )


def _announce_cpu_cost():
    """Before the first job of a CPU run: the estimated training time of the grid (ssnet.plan)."""
    from ssnet.plan import plan, total_hours

    hours, unknown = total_hours(plan(config))
    if hours >= 1:
        print(
            f"device cpu: the training grid is estimated at {hours:.0f} CPU-hours one job at a time "
            f"(about {hours / 24:.1f} days){f' plus {unknown} run(s) without a figure' if unknown else ''}; "
            "see `python -m ssnet.config plan`. On a GPU machine use device: auto or cuda.",
            file=sys.stderr,
        )


def _announce_missing_jemalloc():
    """Before the first job of a CPU run: that jobs will run glibc malloc (ssnet.allocator)."""
    from ssnet.allocator import missing_jemalloc_notice

    notice = missing_jemalloc_notice(config["cpu_allocator"])
    if notice:
        print(notice, file=sys.stderr)


_limit_gpu_jobs()
if FIRST_PARSE and DEVICE.device == "cpu":
    _announce_cpu_cost()
    _announce_missing_jemalloc()

# The local job server process (ssnet.jobserver) while the workflow runs.
JOB_SERVER = []


def job_server_off_reason():
    """Why this invocation runs no job server (None: it runs one, see start_job_server)."""
    if not config["job_server"]:
        return "job_server: false"
    if workflow.global_resources["_nodes"].value is not None:
        return "jobs are submitted to a cluster"
    if workflow.deployment_settings.deployment_method:
        return "jobs run in their own environments (--use-conda)"
    return None


def start_job_server():
    """onstart: with ``job_server: true``, jobs start from one warm process (ssnet.jobserver) - only
    when they run on this machine in this Python environment (no cluster executor, no --use-conda).
    """
    from ssnet import jobserver

    reason = job_server_off_reason()
    if reason is None:
        JOB_SERVER.append(
            jobserver.start(
                workflow.basedir,
                lambda line: print(line, file=sys.stderr),
                config["cpu_allocator"],
            )
        )
    elif config["job_server"]:
        print(f"job server off: {reason}", file=sys.stderr)


def stop_job_server():
    """onsuccess / onerror: stop the job server started by start_job_server."""
    from ssnet import jobserver

    while JOB_SERVER:
        jobserver.stop(JOB_SERVER.pop())


def _check_raw_data():
    missing = [
        f"  datasets.{d}.raw_dir = '{config['datasets'][d]['raw_dir']}' is not a folder; "
        f"it must be {get_dataset(d).release_hints[config['datasets'][d]['source']]}"
        for d in DATASETS
        if config["datasets"][d]["source"] in ("raw", "preprocessed")
        and not Path(config["datasets"][d]["raw_dir"]).is_dir()
    ]
    if missing:
        _stop(
            "input data not found:\n"
            + "\n".join(missing)
            + "\nDownload the data (README.md, 'Real data'), then set raw_dir in config.yaml or in an "
            "overlay passed with --configfile; or run the synthetic demo:\n"
            "  snakemake all --cores 2 --configfile configs/demo.yaml"
        )


_check_raw_data()


wildcard_constraints:
    dataset="|".join(DATASETS or REGISTERED_DATASETS),
    labelled=r"\d+|all",
    seed=r"\d+",
    method=r"[A-Za-z0-9_\-]+",
    fingerprint=r"[A-Za-z0-9_]+",


def run_files(dataset, name):
    return [run_path(dataset, *run, name) for run in runs_of(config, dataset)]


def run_metric_files(wildcards):
    return run_files(wildcards.dataset, "test_metrics.csv")


def run_info_files(wildcards):
    return run_files(wildcards.dataset, "run_info.json")


def method_order(wildcards):
    return config["datasets"][wildcards.dataset]["methods"]


def final_outputs():
    return (
        [
            f"results/{kind}/{dataset}/{name}"
            for dataset in DATASETS
            for kind, name in (
                ("tables", "main_table.md"),
                ("figures", "dice_vs_labelled.png"),
            )
        ]
        + report_targets(config, DATASETS)
        + ["results/cost/cost.md"]
    )


# ---- data ----------------------------------------------------------------------------------------
def raw_source(wildcards):
    """Input release (raw archive or preprocessed release) and split lists; generated if synthetic."""
    block = config["datasets"][wildcards.dataset]
    if block["source"] == "synthetic":
        root = f"results/synthetic/{wildcards.dataset}"
        return {"raw": f"{root}/raw", "splits": f"{root}/splits"}
    return {"raw": block["raw_dir"], "splits": block["splits_dir"]}


def checked_inputs(wildcards):
    """The checked fingerprint of the dataset's current inputs (ssnet/data/fingerprint.py): a new one
    (inputs changed) makes the check job run, then preprocessing and everything downstream.
    """
    return _checked_inputs(wildcards.dataset)


@functools.lru_cache(maxsize=None)
def _checked_inputs(dataset):
    block = config["datasets"][dataset]
    inputs = raw_source(SimpleNamespace(dataset=dataset))
    return fingerprint_target(
        f"results/fingerprints/{dataset}",
        [inputs["raw"], inputs["splits"]],
        block["fingerprint"],
        check_settings(block["source"], block["preprocessing"]),
        generated=block["source"] == "synthetic",
    )


def synthetic_params(wildcards):
    return config["datasets"][wildcards.dataset]["synthetic"]


def preprocessing_params(wildcards):
    return config["datasets"][wildcards.dataset]["preprocessing"]


# ---- training and evaluation -------------------------------------------------------------------
def train_params(wildcards):
    """The resolved run config; inference settings only matter to training when they select models."""
    run = run_config(config, wildcards.dataset, wildcards.method, wildcards.labelled)
    if run["selection"]["mode"] == "last":
        run.pop("inference")
    return run


def inference_params(wildcards):
    return run_config(config, wildcards.dataset, wildcards.method, wildcards.labelled)[
        "inference"
    ]


def uses_cuda():
    return config["device"] == "cuda"


def train_env():
    return "../envs/train-cuda.yaml" if uses_cuda() else "../envs/train-cpu.yaml"


def train_gpus():
    return 1 if uses_cuda() else 0
