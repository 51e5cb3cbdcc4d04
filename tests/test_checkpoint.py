"""Resume checkpoints that cannot strand a run: the previous one is kept until the new one is verified,
and an unreadable latest one falls back to the previous one (or a fresh start), with a warning."""

import pytest
import torch

from ssnet.engine import checkpoint
from ssnet.engine.checkpoint import load_resume_checkpoint, previous_checkpoint, save_resume_checkpoint


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def test_saving_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_resume_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})
    assert not previous_checkpoint(path).exists()
    save_resume_checkpoint(path, {"iteration": 2, "w": torch.ones(3)})
    assert previous_checkpoint(path) == tmp_path / "last.prev.pt"
    assert torch.load(path)["iteration"] == 2 and torch.load(previous_checkpoint(path))["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_a_write_that_cannot_be_read_back_leaves_both_checkpoints(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_resume_checkpoint(path, {"iteration": 1})
    save_resume_checkpoint(path, {"iteration": 2})

    def broken(obj, target):
        target.write_bytes(b"not a checkpoint")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(Exception):
        save_resume_checkpoint(path, {"iteration": 3})
    assert torch.load(path)["iteration"] == 2 and torch.load(previous_checkpoint(path))["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]  # no temporary left


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    path, warnings = tmp_path / "last.pt", []
    save_resume_checkpoint(path, {"iteration": 1})
    save_resume_checkpoint(path, {"iteration": 2})
    _truncate(path)
    state = load_resume_checkpoint(path, warnings.append)
    assert state["iteration"] == 1
    assert f"resume checkpoint {path} is unreadable" in warnings[0]
    assert f"resuming from the previous checkpoint {previous_checkpoint(path)}" in warnings[1]


def test_no_readable_checkpoint_starts_afresh_with_a_warning(tmp_path):
    path, warnings = tmp_path / "last.pt", []
    assert load_resume_checkpoint(path, warnings.append) is None and warnings == []  # nothing there: silent
    save_resume_checkpoint(path, {"iteration": 1})
    _truncate(path)
    assert load_resume_checkpoint(path, warnings.append) is None
    assert "unreadable" in warnings[0] and "training starts from iteration 0" in warnings[-1]


def test_training_resumes_from_the_previous_checkpoint_when_the_latest_is_corrupt(preprocessed, tmp_path, capsys):
    from conftest import KilledAt, kill_at, tiny_run_config
    from ssnet.engine.checkpoint import load_torch
    from ssnet.engine.trainer import RunOutputs, Trainer, train

    cfg = tiny_run_config("ACDC", iterations=6, checkpoint_every=2)
    outputs = lambda name: RunOutputs(*(tmp_path / name / f for f in  # noqa: E731
                                        ("model.pt", "train_log.csv", "val_log.csv", "run_info.json")))
    train(cfg, 4, preprocessed["ACDC"], outputs("full"), tmp_path / "ckpt_full")

    with pytest.raises(KilledAt):
        Trainer(cfg, 4, preprocessed["ACDC"], tmp_path / "ckpt").fit(on_iteration_end=kill_at(5))
    _truncate(tmp_path / "ckpt" / "last.pt")  # iteration 4's; iteration 2's is kept as last.prev.pt
    capsys.readouterr()
    trainer = Trainer(cfg, 4, preprocessed["ACDC"], tmp_path / "ckpt")
    trainer.try_resume()
    assert trainer.start == 2
    assert "last.pt is unreadable" in capsys.readouterr().err
    train(cfg, 4, preprocessed["ACDC"], outputs("resumed"), tmp_path / "ckpt")
    full, resumed = load_torch(tmp_path / "full" / "model.pt"), load_torch(tmp_path / "resumed" / "model.pt")
    for key, value in full["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert not any((tmp_path / "ckpt").glob("*.pt"))  # removed after the successful run
