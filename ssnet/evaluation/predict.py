"""Dataset-aware prediction of one evaluation volume with a run's inference settings."""

from __future__ import annotations

import numpy as np
import torch

from ssnet.evaluation.inference import largest_component, predict_volume_2d, sliding_window_predict


def predict_case(network: torch.nn.Module, image: np.ndarray, dataset: str, inference: dict, n_classes: int, device) -> np.ndarray:
    """Label map of one volume: LA (X, Y, Z) by sliding window, ACDC (Z, H, W) slice by slice."""
    if dataset == "LA":
        prediction, _ = sliding_window_predict(
            network,
            image,
            patch=inference["patch_size"],
            stride_xy=inference["stride_xy"],
            stride_z=inference["stride_z"],
            n_classes=n_classes,
            batch_size=inference["batch_size"],
            device=device,
        )
    else:
        prediction = predict_volume_2d(
            network, image, size=inference["patch_size"], batch_size=inference["batch_size"], device=device
        )
    if inference.get("largest_component"):
        prediction = _largest_component_per_class(prediction, n_classes)
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
