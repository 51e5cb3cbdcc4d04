"""Evaluate one trained run on the test list: one row per case (LA) or per case and class (ACDC)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ssnet.config import dataset_spec
from ssnet.data.loading import case_path, read_sample
from ssnet.data.splits import read_splits
from ssnet.engine.checkpoint import load_model
from ssnet.engine.trainer import resolve_device
from ssnet.evaluation.metrics import case_metrics_multiclass
from ssnet.evaluation.predict import predict_case
from ssnet.io import write_csv

COLUMNS = ["dataset", "method", "labelled", "seed", "case", "class", "dice", "jaccard", "hd95", "asd",
           "empty_prediction", "empty_ground_truth"]


def evaluate_run(model_path: str | Path, data_root: str | Path, out_csv: str | Path, inference: dict | None = None,
                 threads: int = 1) -> pd.DataFrame:
    """Predict every test case and score it with medpy (voxel units).

    ``inference`` overrides the inference settings saved with the model (the rule passes the
    current config, so changing e.g. the stride re-evaluates without retraining).

    Columns: ``COLUMNS``; ``class`` is the foreground class (1 for LA; 1 RV, 2 Myo, 3 LV for ACDC).
    """
    torch.set_num_threads(max(1, int(threads)))
    method, saved = load_model(model_path)
    cfg = saved["run_config"]
    spec = dataset_spec(cfg["dataset"])
    device = resolve_device(cfg["device"])
    network = method.to(device).inference_network()
    inference = inference or cfg.get("inference")
    test_cases = read_splits(Path(data_root) / "splits", spec.name)["test"]
    rows, started = [], time.perf_counter()
    for i, case in enumerate(test_cases, start=1):
        image, label = read_sample(case_path(data_root, spec.name, case))
        prediction = predict_case(network, image, spec.name, inference, spec.n_classes, device)
        for cls, metrics in case_metrics_multiclass(prediction, label, range(1, spec.n_classes)).items():
            rows.append({"dataset": spec.name, "method": cfg["method"], "labelled": cfg["labelled"],
                         "seed": saved["seed"], "case": case, "class": cls, **metrics})
        print(f"[evaluate {cfg['dataset']}/{cfg['method']}/{cfg['labelled']}/seed{saved['seed']}] "
              f"{i}/{len(test_cases)} {case} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(out_csv, frame)
    return frame

