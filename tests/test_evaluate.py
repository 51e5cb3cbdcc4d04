"""Test-set evaluation of a trained run: one row per case and class, medpy metrics."""

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_run_config
from ssnet.datasets import get_dataset
from ssnet.engine.trainer import RunOutputs, train
from ssnet.evaluation.evaluate import COLUMNS, evaluate_run
from ssnet.evaluation.predict import dice_per_class


@pytest.mark.parametrize("dataset, n_classes", [("LA", 2), ("ACDC", 4)])
def test_evaluate_run_writes_per_case_rows(preprocessed, tmp_path, dataset, n_classes):
    cfg = tiny_run_config(dataset, iterations=2)
    outputs = RunOutputs(tmp_path / "model.pt", tmp_path / "log.csv", tmp_path / "val.csv", tmp_path / "info.json")
    train(cfg, 1, preprocessed[dataset], outputs, tmp_path / "ckpt")
    frame = evaluate_run(outputs.model, preprocessed[dataset], tmp_path / "metrics.csv")
    test_cases = get_dataset(dataset).read_splits(preprocessed[dataset] / "splits")["test"]
    assert list(frame.columns) == COLUMNS
    assert len(frame) == len(test_cases) * (n_classes - 1)
    assert sorted(set(frame["case"])) == sorted(test_cases)
    assert frame["dice"].between(0, 1).all()
    written = pd.read_csv(tmp_path / "metrics.csv", dtype={"labelled": str})
    pd.testing.assert_frame_equal(written, frame, check_dtype=False)


def test_dice_per_class_hand_computed():
    label = np.array([[1, 1, 0, 2]])
    prediction = np.array([[1, 0, 0, 3]])
    # class 1: 2*1/(1+2); class 2 absent from prediction -> 0; class 3 predicted, absent in label -> 0
    assert dice_per_class(prediction, label, 4) == pytest.approx([2 / 3, 0.0, 0.0])
