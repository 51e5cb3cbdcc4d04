"""Evaluate one trained run on the test list: one row per test case and foreground class."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ssnet.allocator import apply_cpu_allocator
from ssnet.data.loading import read_sample
from ssnet.datasets import get_dataset
from ssnet.engine.checkpoint import load_model
from ssnet.evaluation.metrics import case_metrics_multiclass
from ssnet.evaluation.predict import predict_case
from ssnet.io import atomic_path, write_csv
from ssnet.networks.fusion import network_for_inference
from ssnet.runtime import memory_format, resolve_device

COLUMNS = ["dataset", "method", "labelled", "seed", "case", "class", "dice", "jaccard", "hd95", "asd",
           "empty_prediction", "empty_ground_truth"]


def evaluate_run(model_path: str | Path, data_root: str | Path, out_csv: str | Path, inference: dict | None = None,
                 threads: int = 1, predictions_out: str | Path | None = None, qualitative_cases: int = 3) -> pd.DataFrame:
    """Predict every test case and score it with medpy (voxel units).

    ``inference`` overrides the inference settings saved with the model (the rule passes the
    current config, so changing e.g. the stride re-evaluates without retraining).

    Columns: ``COLUMNS``; ``class`` is the foreground label (1, 2, ...: the dataset's ``class_names``).

    ``predictions_out`` (optional): an ``.npz`` with one 2D slice (image, label, prediction) of the
    first ``qualitative_cases`` test cases, for the qualitative figure (:func:`qualitative_slices`).
    """
    torch.set_num_threads(max(1, int(threads)))
    method, saved = load_model(model_path)
    cfg = saved["run_config"]
    apply_cpu_allocator(cfg, lambda line: print(line, file=sys.stderr, flush=True))
    dataset = get_dataset(cfg["dataset"])
    device = resolve_device(cfg["device"])
    inference = inference or cfg["inference"]
    network = evaluation_network(method, cfg, device, inference)
    test_cases = dataset.read_splits(Path(data_root) / "splits")["test"]
    rows, started, slices = [], time.perf_counter(), []
    for i, case in enumerate(test_cases, start=1):
        image, label = read_sample(dataset.case_path(data_root, case))
        prediction = predict_case(network, image, dataset, inference, device)
        if predictions_out is not None and i <= qualitative_cases:
            slices.append((case, *qualitative_slice(image, label, prediction, dataset.qualitative_axis)))
        for cls, metrics in case_metrics_multiclass(prediction, label, range(1, dataset.n_classes)).items():
            rows.append({"dataset": dataset.name, "method": cfg["method"], "labelled": cfg["labelled"],
                         "seed": saved["seed"], "case": case, "class": cls, **metrics})
        print(f"[evaluate {cfg['dataset']}/{cfg['method']}/{cfg['labelled']}/seed{saved['seed']}] "
              f"{i}/{len(test_cases)} {case} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if predictions_out is not None:
        write_qualitative(predictions_out, slices)
    write_csv(out_csv, frame)
    return frame


def evaluation_network(method, cfg: dict, device: torch.device, inference: dict) -> torch.nn.Module:
    """The network that predicts: the method's inference network on ``device``, in the memory layout the
    run was trained in (``channels_last``; the batches follow the weights' layout), with convolution,
    BatchNorm and activation fused where ``inference`` asks for it (:func:`network_for_inference`)."""
    layout = memory_format(bool(cfg["channels_last"]), get_dataset(cfg["dataset"]).dim)
    return network_for_inference(method.to(device, memory_format=layout).inference_network(), inference, device)


def qualitative_slice(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, axis: int):
    """(slice index, image, label, prediction) of the slice along ``axis`` (the dataset's
    ``qualitative_axis``: axial slices) with the most ground-truth foreground.

    The slice depends on the ground truth only, so every method's file shows the same slice.
    """
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
