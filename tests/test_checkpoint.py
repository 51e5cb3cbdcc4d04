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
