"""Aggregation stage entry point: per-run metrics -> tables and figures of one dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ssnet.io import write_csv
from ssnet.report.figures import dice_vs_labelled
from ssnet.report.tables import load_runs, summarise, write_tables


def aggregate(dataset: str, metric_files: Sequence[str], info_files: Sequence[str], method_order: Sequence[str],
              schedule_profile: str, outputs: dict[str, str]) -> None:
    """Write ``outputs`` = {table_csv, table_md, table_tex, runs_csv, figure_png, figure_pdf}."""
    runs = load_runs(metric_files, info_files)
    table = summarise(runs, method_order)
    write_tables(table, dataset, schedule_profile, Path(outputs["table_csv"]), Path(outputs["table_md"]),
                 Path(outputs["table_tex"]))
    write_csv(outputs["runs_csv"], runs.sort_values(["method", "labelled", "seed"]))
    dice_vs_labelled(runs, method_order, dataset, Path(outputs["figure_png"]), Path(outputs["figure_pdf"]))
