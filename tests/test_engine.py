"""The training engine: schedules, resume equals uninterrupted, preemption, selection, outputs."""

import json
import os
import signal

import pandas as pd
import pytest
import torch

from conftest import KilledAt, kill_at, tiny_run_config
from ssnet.engine.checkpoint import load_model, load_torch
from ssnet.engine.schedule import learning_rate
from ssnet.engine.trainer import Preempted, RunOutputs, Trainer, train


def test_learning_rate_policies():
    step = {"lr": 0.01, "lr_policy": "step", "lr_step": 2500, "lr_gamma": 0.1}
    assert learning_rate(0, step) == 0.01 and learning_rate(2499, step) == 0.01
    assert learning_rate(2500, step) == pytest.approx(0.001) and learning_rate(5000, step) == pytest.approx(1e-4)
    poly = {"lr": 0.01, "lr_policy": "poly", "iterations": 100, "poly_power": 0.9}
    assert learning_rate(0, poly) == learning_rate(1, poly) == 0.01  # SSL4MIS: set after the step, from its count
    assert learning_rate(51, poly) == pytest.approx(0.01 * 0.5**0.9)
    assert learning_rate(7, {"lr": 0.02, "lr_policy": "constant"}) == 0.02
    with pytest.raises(ValueError, match="lr_policy"):
        learning_rate(0, {"lr": 0.01, "lr_policy": "cosine"})


def _outputs(path):
    return RunOutputs(path / "model.pt", path / "train_log.csv", path / "val_log.csv", path / "run_info.json")


def _weights(path):
    return load_torch(path)["state_dict"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_resume_after_kill_equals_uninterrupted(preprocessed, tmp_path, dataset):
    cfg = tiny_run_config(dataset)
    train(cfg, 5, preprocessed[dataset], _outputs(tmp_path / "full"), tmp_path / "ckpt_full")

    killed = Trainer(cfg, 5, preprocessed[dataset], tmp_path / "ckpt")
    with pytest.raises(KilledAt):
        killed.fit(on_iteration_end=kill_at(4))  # checkpoint at 3, killed after 4
    train(cfg, 5, preprocessed[dataset], _outputs(tmp_path / "resumed"), tmp_path / "ckpt")

    _assert_same_weights(_weights(tmp_path / "full" / "model.pt"), _weights(tmp_path / "resumed" / "model.pt"))
    full = pd.read_csv(tmp_path / "full" / "train_log.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    pd.testing.assert_frame_equal(full, resumed)
    assert list(full["iteration"]) == list(range(1, 7))
    assert not (tmp_path / "ckpt" / "last.pt").exists()  # cleaned up after success


def test_sigterm_checkpoints_and_resumes(preprocessed, tmp_path):
    cfg = tiny_run_config("LA", iterations=5, checkpoint_every=100)
    train(cfg, 2, preprocessed["LA"], _outputs(tmp_path / "full"), tmp_path / "ckpt_full")
    trainer = Trainer(cfg, 2, preprocessed["LA"], tmp_path / "ckpt")

    def terminate(done):
        if done == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match="signal"):
        trainer.fit(on_iteration_end=terminate)
    assert load_torch(tmp_path / "ckpt" / "last.pt")["iteration"] == 3  # signal seen after iteration 3's step
    train(cfg, 2, preprocessed["LA"], _outputs(tmp_path / "resumed"), tmp_path / "ckpt")
    _assert_same_weights(_weights(tmp_path / "full" / "model.pt"), _weights(tmp_path / "resumed" / "model.pt"))


def test_changed_config_does_not_resume(preprocessed, tmp_path):
    cfg = tiny_run_config("LA")
    with pytest.raises(KilledAt):
        Trainer(cfg, 1, preprocessed["LA"], tmp_path / "ckpt").fit(on_iteration_end=kill_at(4))
    messages = []
    other = tiny_run_config("LA", lr=0.02)
    trainer = Trainer(other, 1, preprocessed["LA"], tmp_path / "ckpt", progress=messages.append)
    trainer.try_resume()
    assert trainer.start == 0 and any("another configuration" in m for m in messages)


def test_best_val_selection_and_run_record(preprocessed, tmp_path):
    cfg = tiny_run_config("ACDC", iterations=4)
    cfg["selection"] = {"mode": "best_val", "val_every": 2, "val_start": 0, "validation_cases": 0}
    train(cfg, 7, preprocessed["ACDC"], _outputs(tmp_path), tmp_path / "ckpt")
    val = pd.read_csv(tmp_path / "val_log.csv")
    assert list(val["iteration"]) == [2, 4]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["selected_iteration"] == int(val.loc[val["val_dice"].idxmax(), "iteration"])
    assert info["selection"] == "best_val" and info["test_set_selection"] is False
    assert info["seed"] == 7 and info["git_commit"] and info["versions"]["torch"] == torch.__version__
    assert info["n_labelled_scans"] == 2 and info["n_unlabelled_scans"] == 0
    assert set(info["validation_items"]).isdisjoint(info["labelled_items"])
    method, saved = load_model(tmp_path / "model.pt")
    assert saved["selected_iteration"] == info["selected_iteration"] and not method.training


def test_best_test_is_flagged(preprocessed, tmp_path):
    cfg = tiny_run_config("LA", iterations=2)
    cfg["selection"] = {"mode": "best_test", "val_every": 1, "val_start": 0, "validation_cases": 0}
    train(cfg, 1, preprocessed["LA"], _outputs(tmp_path), tmp_path / "ckpt")
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["test_set_selection"] is True


def test_la_validation_cases_are_carved_from_train_list(preprocessed, tmp_path):
    from ssnet.data.loading import training_split
    from ssnet.datasets import get_dataset

    la = get_dataset("LA")
    split = training_split(preprocessed["LA"], la, "2", {"mode": "best_val", "validation_cases": 2})
    train_list = la.read_splits(preprocessed["LA"] / "splits")["train"]
    assert split.validation == train_list[-2:]
    assert set(split.validation).isdisjoint(split.labelled + split.unlabelled)
    assert split.labelled == train_list[:2]


def test_step_context_backward_accumulates_and_scales():
    """Parts back-propagated inside a step add up to the gradient of their sum; scaling (AMP) applies
    to the gradients, not to the logged value."""
    from ssnet.methods.base import StepContext

    w = torch.tensor([1.0, 2.0], requires_grad=True)
    ctx = StepContext(0, 1, scale=lambda loss: 4.0 * loss)
    ctx.backward((w**2).sum())  # 5, grad 2w
    ctx.backward(3.0 * w.sum())  # 9, grad 3
    assert ctx.backpropagated == pytest.approx(14.0)
    torch.testing.assert_close(w.grad, 4.0 * (2.0 * w.detach() + 3.0))
