"""CPU time of the paper-grid dry run, side by side with Snakemake's own floor, in one run.

Alternates, ``--repeats`` times each:
  * ``paper``: ``snakemake -n all`` with config.yaml (both datasets pointed at empty data folders);
  * ``empty``: ``snakemake -n`` of a one-rule workflow (Snakemake's start-up and scheduling floor);
  * ``parse``: the workflow's own Python at parse time (import ssnet.config/.workflow/.report.targets
    and resolve config.yaml), in a fresh interpreter.
Prints the child CPU time (user + system) of each repeat and the minimum per variant.

    .venv/bin/python benchmarks/dry_run_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARSE = ("import ssnet.config as c, ssnet.workflow, ssnet.report.targets; "
         "c.load_config(['config.yaml', {overlay!r}])")


def child_cpu(command: list[str], cwd: Path) -> float:
    """CPU seconds (user + system) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="dry_run_"))
    for dataset in ("LA", "ACDC"):
        (scratch / "data" / dataset).mkdir(parents=True)
    overlay = scratch / "paper.yaml"
    overlay.write_text("datasets:\n" + "".join(f"  {d}: {{raw_dir: {scratch / 'data' / d}}}\n" for d in ("LA", "ACDC")))
    empty = scratch / "empty"
    empty.mkdir()
    (empty / "Snakefile").write_text('rule all:\n    shell: "true"\n')
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"]
    variants = {
        "paper": (snakemake + ["all", "--cores", "8", "--configfile", str(overlay)], ROOT),
        "empty": (snakemake + ["--cores", "1"], empty),
        "parse": ([sys.executable, "-c", PARSE.format(overlay=str(overlay))], ROOT),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, (command, cwd) in variants.items():
            times[name].append(child_cpu(command, cwd))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    print("minimum CPU seconds: " + ", ".join(f"{n} {min(t):.2f}" for n, t in times.items()))
    print(f"paper grid minus the empty workflow: {min(times['paper']) - min(times['empty']):.2f} s")


if __name__ == "__main__":
    main()
