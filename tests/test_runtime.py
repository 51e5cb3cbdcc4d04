"""Process-level speed settings: memory layout and glibc malloc thresholds (same results)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT, tiny_run_config
from ssnet.allocator import configure_malloc
from ssnet.engine.trainer import RunOutputs, Trainer, train
from ssnet.errors import ConfigError
from ssnet.evaluation.evaluate import evaluate_run
from ssnet.runtime import memory_format


def test_memory_format_by_dimension():
    assert memory_format(False, 3) == torch.contiguous_format
    assert memory_format(True, 3) == torch.channels_last_3d
    assert memory_format(True, 2) == torch.channels_last


def test_malloc_thresholds_checked_and_applied():
    assert configure_malloc(None, None) == {}
    with pytest.raises(ConfigError, match="cpu_allocator.mmap_threshold_mb"):
        configure_malloc(4096, None)
    with pytest.raises(ConfigError, match="cpu_allocator.trim_threshold_mb"):
        configure_malloc(None, -1)
    # in a child process: the thresholds would stay raised for the rest of this test session
    code = ("import json; from ssnet.allocator import configure_malloc; "
            "print(json.dumps(configure_malloc(2047, 64)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    applied = json.loads(done.stdout)
    if sys.platform.startswith("linux"):  # glibc
        assert applied == {"M_MMAP_THRESHOLD": 2047 << 20, "M_TRIM_THRESHOLD": 64 << 20}


def _outputs(path):
    return RunOutputs(path / "model.pt", path / "train_log.csv", path / "val_log.csv", path / "run_info.json")


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_channels_last_training_matches_contiguous(preprocessed, tmp_path, monkeypatch, dataset):
    """SS-Net trained with channels-last weights and batches: the same losses up to summation order,
    dropout active (the UNet's element-wise masks are drawn in logical order in both layouts)."""
    calls = []
    monkeypatch.setattr("ssnet.allocator.configure_malloc", lambda *args: calls.append(args[:2]) or {})
    logs = {}
    for channels_last in (False, True):
        cfg = tiny_run_config(dataset, method="ssnet", iterations=3)
        cfg.update(channels_last=channels_last, cpu_allocator={"mmap_threshold_mb": 2047, "trim_threshold_mb": None})
        out = tmp_path / str(channels_last)
        train(cfg, 3, preprocessed[dataset], _outputs(out), tmp_path / f"ckpt{channels_last}")
        logs[channels_last] = pd.read_csv(out / "train_log.csv")
    assert calls == [(2047, None), (2047, None)]
    evaluate_run(out / "model.pt", preprocessed[dataset], tmp_path / "metrics.csv")
    assert calls[-1] == (2047, None)  # evaluation: the allocator setting the run was trained with
    columns = ["loss", "loss_sup", "loss_smooth", "loss_sep_l", "loss_sep_u"]
    pd.testing.assert_frame_equal(logs[True][columns], logs[False][columns], rtol=1e-3, atol=1e-5)
    trainer = Trainer(cfg, 3, preprocessed[dataset], tmp_path / "ckpt_probe")
    conv = next(m for m in trainer.method.network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert conv.weight.is_contiguous(memory_format=memory_format(True, 3 if dataset == "LA" else 2))


def test_unet_dropout_masks_do_not_depend_on_the_memory_layout():
    """Train-mode UNet forward (dropout p up to 0.5) on a contiguous and a channels-last copy of one batch,
    the generator seeded alike: same output up to summation order (other masks would differ by O(1))."""
    from ssnet.networks import build_network

    torch.manual_seed(0)
    network = build_network("unet", in_channels=1, n_classes=4, channels=(4, 8, 16, 32, 64)).train()
    x = torch.randn(2, 1, 32, 32)
    outputs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(5)
        outputs.append(network.to(memory_format=fmt)(x.contiguous(memory_format=fmt))[0])
    assert outputs[1].is_contiguous(memory_format=torch.channels_last) or outputs[1].is_contiguous()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("p", [0.05, 0.5, 1.0])
def test_layout_independent_dropout_equals_dropout_of_the_contiguous_input(p):
    """Bit for bit: the channels-last path gives what ``F.dropout`` gives the contiguous tensor (same draws),
    and leaves the generator where ``F.dropout`` leaves it."""
    from ssnet.networks.unet import LayoutIndependentDropout

    x = torch.randn(3, 5, 8, 6)
    torch.manual_seed(1)
    expected, after = torch.nn.functional.dropout(x, p, True), torch.rand(4)
    torch.manual_seed(1)
    got = LayoutIndependentDropout(p).train()(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(got, expected) and torch.equal(torch.rand(4), after)
