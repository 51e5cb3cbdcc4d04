"""Print the resolved configuration, or the complete configuration of one run.

    python -m ssnet.config show [--configfile overlay.yaml ...] [--run LA/ssnet_no_sep/4] [--format yaml|json]
    python -m ssnet.config runs [--configfile overlay.yaml ...]
    python -m ssnet.config plan [--configfile overlay.yaml ...] [--results results]

``config.yaml`` of the project is read first, then each ``--configfile`` overlay (as Snakemake does).
``--run DATASET/METHOD/LABELLED`` prints what that training job receives as ``params``. ``plan`` prints
the grid with estimated hours and peak memory per job on the device the workflow would resolve
(:mod:`ssnet.plan`, :mod:`ssnet.devices`), without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from ssnet.config import FULL, PROJECT_ROOT, labelled_values, load_config, run_config
from ssnet.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssnet.config", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["show", "runs", "plan"],
                        help="show: resolved config (or one run); runs: labelled values per method; plan: cost")
    parser.add_argument("--configfile", nargs="+", action="extend", default=[], metavar="FILE",
                        help="overlays merged over config.yaml, in order")
    parser.add_argument("--base", default=str(PROJECT_ROOT / "config.yaml"), help="base config (default: %(default)s)")
    parser.add_argument("--run", metavar="DATASET/METHOD/LABELLED", help="print one run's configuration")
    parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
    parser.add_argument("--results", default="results", help="plan: where measured runs are (default: %(default)s)")
    return parser


def _run(config: dict, spec: str) -> dict:
    parts = spec.strip("/").split("/")
    if len(parts) != 3:
        raise ConfigError(f"--run {spec!r}: expected DATASET/METHOD/LABELLED, e.g. LA/ssnet_no_sep/4")
    dataset, method, labelled = parts
    if dataset not in config["datasets"]:
        raise ConfigError(f"--run {spec!r}: no dataset {dataset!r} (configured: {', '.join(config['datasets'])})")
    if method not in config["methods"]:
        raise ConfigError(f"--run {spec!r}: no method block {method!r} (defined: {', '.join(config['methods'])})")
    if labelled != FULL and not labelled.isdigit():
        raise ConfigError(f"--run {spec!r}: LABELLED must be a count or {FULL!r}")
    if method not in config["datasets"][dataset]["methods"]:
        print(f"note: {method} is not listed under datasets.{dataset}.methods, so `all` does not train it",
              file=sys.stderr)
    elif labelled not in labelled_values(config, dataset, method):
        print(f"note: `all` trains {method} on {dataset} at labelled "
              f"{', '.join(labelled_values(config, dataset, method))}, not {labelled}", file=sys.stderr)
    return run_config(config, dataset, method, labelled)


def _plan(config: dict, results: str) -> str:
    from ssnet.devices import resolve_device
    from ssnet.plan import format_plan, plan

    device = resolve_device(config["device"])
    config = {**config, "device": device.device}
    return device.describe() + "\n" + format_plan(plan(config, results), device.device)


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists (patch sizes, channels stay on one line)."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config([args.base, *args.configfile])
        if args.command == "plan":
            print(_plan(config, args.results))
            return 0
        if args.command == "runs":
            data = {d: {m: labelled_values(config, d, m) for m in block["methods"]}
                    for d, block in config["datasets"].items() if block["enabled"]}
        else:
            data = _run(config, args.run) if args.run else config
    except ConfigError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=110), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
