"""Prediction of one evaluation volume with a run's inference settings (the dataset names its predictor)."""

from __future__ import annotations

import numpy as np
import torch

from ssnet.datasets import Dataset
from ssnet.evaluation.inference import largest_component


def predict_case(network: torch.nn.Module, image: np.ndarray, dataset: Dataset, inference: dict, device) -> np.ndarray:
    """uint8 label map of one volume (:meth:`Dataset.predict_volume`), optionally reduced to the largest
    connected component of each class (``inference.largest_component``)."""
    prediction = dataset.predict_volume(network, image, inference, device)
    if inference["largest_component"]:
        prediction = _largest_component_per_class(prediction, dataset.n_classes)
    return prediction.astype(np.uint8)


def _largest_component_per_class(prediction: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros_like(prediction)
    for c in range(1, n_classes):
        out[largest_component(prediction == c)] = c
    return out


def dice_per_class(prediction: np.ndarray, label: np.ndarray, n_classes: int) -> list[float]:
    """Dice 2|P n G| / (|P| + |G|) per foreground class; 0 when the class is predicted nowhere."""
    scores = []
    for c in range(1, n_classes):
        p, g = prediction == c, label == c
        denominator = p.sum() + g.sum()
        scores.append(float(2.0 * np.logical_and(p, g).sum() / denominator) if p.any() and denominator else 0.0)
    return scores
