"""Reading the qualitative slices that evaluation saves per run (``predictions.npz``), without PyTorch.

Format (written by :func:`ssnet.evaluation.evaluate.write_qualitative`): ``cases`` and ``slices``
arrays, plus ``image_<i>``, ``label_<i>``, ``prediction_<i>`` (2D) per saved test case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_qualitative(path: str | Path) -> list[dict]:
    """One dict (case, slice, image, label, prediction) per saved test case."""
    with np.load(path) as data:
        return [{"case": str(case), "slice": int(index), "image": data[f"image_{i}"], "label": data[f"label_{i}"],
                 "prediction": data[f"prediction_{i}"]} for i, (case, index) in enumerate(zip(data["cases"], data["slices"]))]
