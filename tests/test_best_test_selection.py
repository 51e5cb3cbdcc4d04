"""``best_test`` model selection scores and compares as the reference LA code (SS-Net
code/train_ss_3d.py with code/utils/test_3d_patch.py ``var_all_case_LA``)."""

import numpy as np
import pytest
from medpy import metric

from conftest import tiny_run_config
from ssnet.engine import trainer as trainer_module
from ssnet.engine.trainer import Trainer, is_new_best, kept_best_score


def replay(scores, mode):
    """(kept best, iteration) after validations at iterations 1..n, as Trainer.maybe_validate keeps them."""
    best = {"score": -1.0, "iteration": 0}
    for iteration, score in enumerate(scores, start=1):
        if is_new_best(score, best["score"], mode):
            best = {"score": kept_best_score(score, mode), "iteration": iteration}
    return best


def test_best_test_compares_against_the_rounded_best():
    # reference: `if dice_sample > best_dice: best_dice = round(dice_sample, 4)`, best_dice = 0 at start
    assert replay([0.0], "best_test") == {"score": -1.0, "iteration": 0}  # 0 never beats the initial 0
    assert replay([0.0], "best_val") == {"score": 0.0, "iteration": 1}
    # rounded up: a later, higher raw score below the rounded best does not replace it
    assert replay([0.91236, 0.91238], "best_test") == {"score": 0.9124, "iteration": 1}
    assert replay([0.91236, 0.91238], "best_val") == {"score": 0.91238, "iteration": 2}
    # rounded down: a later, LOWER raw score above the rounded best replaces it
    assert replay([0.91244, 0.91242], "best_test") == {"score": 0.9124, "iteration": 2}
    assert replay([0.91244, 0.91242], "best_val") == {"score": 0.91244, "iteration": 1}
    assert replay([0.5, 0.91241, 0.7], "best_test") == {"score": 0.9124, "iteration": 2}


@pytest.mark.parametrize("mode", ["best_test", "best_val"])
def test_la_best_test_scores_without_largest_component(preprocessed, tmp_path, monkeypatch, mode):
    """best_test: the mean over test.list of medpy dc (0 for an empty prediction) of the thresholded
    sliding-window prediction, no largest component; best_val keeps the run's inference settings."""
    cfg = tiny_run_config("LA", "ssnet")
    cfg["selection"] = {"mode": mode, "val_every": 1, "val_start": 0, "validation_cases": 2}
    assert cfg["inference"]["largest_component"] is True
    trainer = Trainer(cfg, 1, preprocessed["LA"], tmp_path)
    seen = []
    predict = trainer_module.predict_case

    def recording_predict(network, image, dataset, inference, device):
        prediction = predict(network, image, dataset, inference, device)
        seen.append((inference["largest_component"], prediction))
        return prediction

    monkeypatch.setattr(trainer_module, "predict_case", recording_predict)
    score = trainer.validate()
    assert len(seen) == len(trainer.split.validation) >= 2
    assert {flag for flag, _ in seen} == {mode != "best_test"}
    if mode == "best_test":
        assert any(prediction.any() for _, prediction in seen)
        total = 0.0
        for name, (_, prediction) in zip(trainer.split.validation, seen):
            label = trainer_module.read_sample(trainer.dataset.case_path(trainer.data_root, name))[1]
            total += metric.binary.dc(prediction, label) if np.sum(prediction) else 0
        assert score == total / len(seen)
