"""Evaluate one trained run on the test list: one row per case (LA) or per case and class (ACDC)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ssnet.config import dataset_spec
from ssnet.data.loading import case_path, read_sample
from ssnet.data.splits import read_splits
from ssnet.engine.checkpoint import load_model
from ssnet.engine.trainer import resolve_device
from ssnet.evaluation.metrics import case_metrics_multiclass
from ssnet.evaluation.predict import predict_case
from ssnet.io import atomic_path, write_csv
from ssnet.runtime import apply_cpu_allocator

COLUMNS = ["dataset", "method", "labelled", "seed", "case", "class", "dice", "jaccard", "hd95", "asd",
           "empty_prediction", "empty_ground_truth"]


def evaluate_run(model_path: str | Path, data_root: str | Path, out_csv: str | Path, inference: dict | None = None,
                 threads: int = 1, predictions_out: str | Path | None = None, qualitative_cases: int = 3) -> pd.DataFrame:
    """Predict every test case and score it with medpy (voxel units).

    ``inference`` overrides the inference settings saved with the model (the rule passes the
    current config, so changing e.g. the stride re-evaluates without retraining).

    Columns: ``COLUMNS``; ``class`` is the foreground class (1 for LA; 1 RV, 2 Myo, 3 LV for ACDC).

    ``predictions_out`` (optional): an ``.npz`` with one 2D slice (image, label, prediction) of the
    first ``qualitative_cases`` test cases, for the qualitative figure (:func:`qualitative_slices`).
    """
    torch.set_num_threads(max(1, int(threads)))
    method, saved = load_model(model_path)
    cfg = saved["run_config"]
    apply_cpu_allocator(cfg, lambda line: print(line, file=sys.stderr, flush=True))
    spec = dataset_spec(cfg["dataset"])
    device = resolve_device(cfg["device"])
    network = method.to(device).inference_network()
    inference = inference or cfg.get("inference")
    test_cases = read_splits(Path(data_root) / "splits", spec.name)["test"]
    rows, started, slices = [], time.perf_counter(), []
    for i, case in enumerate(test_cases, start=1):
        image, label = read_sample(case_path(data_root, spec.name, case))
        prediction = predict_case(network, image, spec.name, inference, spec.n_classes, device)
        if predictions_out is not None and i <= qualitative_cases:
            slices.append((case, *qualitative_slice(image, label, prediction, spec.name)))
        for cls, metrics in case_metrics_multiclass(prediction, label, range(1, spec.n_classes)).items():
            rows.append({"dataset": spec.name, "method": cfg["method"], "labelled": cfg["labelled"],
                         "seed": saved["seed"], "case": case, "class": cls, **metrics})
        print(f"[evaluate {cfg['dataset']}/{cfg['method']}/{cfg['labelled']}/seed{saved['seed']}] "
              f"{i}/{len(test_cases)} {case} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if predictions_out is not None:
        write_qualitative(predictions_out, slices)
    write_csv(out_csv, frame)
    return frame


def qualitative_slice(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, dataset: str):
    """(slice index, image, label, prediction) of the axial slice with the most ground-truth foreground.

    The slice depends on the ground truth only, so every method's file shows the same slice.
    LA volumes are (X, Y, Z): axial slices along the last axis; ACDC volumes are (Z, H, W).
    """
    axis = 2 if dataset == "LA" else 0
    other = tuple(a for a in range(3) if a != axis)
    index = int(np.argmax((label > 0).sum(axis=other)))
    take = lambda volume: np.take(volume, index, axis=axis)  # noqa: E731
    return index, take(image).astype(np.float32), take(label).astype(np.uint8), take(prediction).astype(np.uint8)


def write_qualitative(path: str | Path, slices: list) -> None:
    """``cases``/``slices`` arrays plus ``image_<i>``, ``label_<i>``, ``prediction_<i>`` per case
    (read back by :func:`ssnet.report.predictions.read_qualitative`)."""
    arrays = {"cases": np.array([s[0] for s in slices], dtype=str),
              "slices": np.array([s[1] for s in slices], dtype=np.int64)}
    for i, (_, _, image, label, prediction) in enumerate(slices):
        arrays.update({f"image_{i}": image, f"label_{i}": label, f"prediction_{i}": prediction})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
