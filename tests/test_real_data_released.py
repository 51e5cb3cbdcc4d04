"""The authors' released SS-Net checkpoints: strict reference-name import and the run files it writes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FEATURE_ATOL
from ssnet.engine.checkpoint import load_model
from ssnet.errors import DataError
from ssnet.io import read_list
from ssnet.networks import count_parameters, to_reference_state
from ssnet.released import RELEASED_LABEL, import_released, load_reference_checkpoint, released_method

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "resources" / "splits"
KEY_LISTS = {"LA": ("vnet", "state_dict_keys_n_filters_16"), "ACDC": ("unet", "state_dict_keys")}
GOLDEN_STATES = {"LA": ("vnet", "vnet_small_state.pt"), "ACDC": ("unet", "unet_state.pt")}


def full_size_state(manifest: dict, dataset: str, seed: int = 0) -> dict:
    """A reference-keyed state dict of the full-size network + heads, random values, from the key list."""
    case, field = KEY_LISTS[dataset]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype, _kind in manifest["cases"][case][field]:
        dtype = getattr(torch, dtype)
        if dtype.is_floating_point:
            state[name] = torch.randn(shape, generator=generator, dtype=dtype)
        else:
            state[name] = torch.randint(0, 10, shape, generator=generator, dtype=dtype)
    return state


@pytest.fixture
def data_root(tmp_path) -> callable:
    def make(dataset: str) -> Path:
        root = tmp_path / "pre" / dataset
        shutil.copytree(OFFICIAL / dataset, root / "splits")
        return root

    return make


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_full_size_reference_state_maps_strictly(manifest, dataset):
    state = full_size_state(manifest, dataset)
    method, fragment, n_heads = released_method(dataset, state)
    assert fragment["method_type"] == "ssnet"  # network + heads
    expected = {"LA": 9_448_866, "ACDC": 1_813_764}[dataset]
    assert count_parameters(method.network) == expected
    assert count_parameters(method.heads) == {"LA": 8_452, "ACDC": 13_064}[dataset]
    back = to_reference_state(method.network, method.heads)
    assert list(back) == list(state)  # every tensor mapped, in the reference order
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    assert n_heads == sum(1 for k in state if not k.startswith(("encoder.", "decoder.")))


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
@pytest.mark.parametrize("change", ["missing", "extra", "reshaped"])
def test_mapping_rejects_a_bad_key_naming_it(manifest, dataset, change):
    state = full_size_state(manifest, dataset)
    keys = list(state)
    key = keys[len(keys) // 2]
    if change == "missing":
        del state[key]
        expected = ["missing reference keys (1)", key]
    elif change == "extra":
        key = "decoder.block_ten.conv.0.weight" if dataset == "LA" else "decoder.up9.conv1x1.weight"
        state[key] = torch.zeros(3)
        expected = ["unmapped reference keys (1)", key]
    else:
        state[key] = state[key].reshape(-1)[:-1].clone() if state[key].numel() > 1 else torch.zeros(2)
        expected = ["shape mismatches (1)", key]
    with pytest.raises(DataError) as err:
        released_method(dataset, state, "LA_best_model.pth")
    for fragment in expected + ["LA_best_model.pth"]:
        assert fragment in str(err.value)


def test_wrong_dataset_or_architecture_rejected(manifest):
    with pytest.raises(DataError, match="output classes"):
        released_method("ACDC", {**full_size_state(manifest, "ACDC"),
                                 "decoder.out_conv.weight": torch.zeros(2, 16, 3, 3),
                                 "decoder.out_conv.bias": torch.zeros(2)})
    with pytest.raises(DataError, match="encoder.block_one.conv.0.weight"):
        released_method("LA", full_size_state(manifest, "ACDC"))


def test_checkpoint_loading_is_weights_only(tmp_path, manifest):
    state = full_size_state(manifest, "ACDC")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")  # DataParallel prefix
    assert list(load_reference_checkpoint(tmp_path / "dp.pth")) == list(state)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    assert list(load_reference_checkpoint(tmp_path / "wrapped.pth")) == list(state)
    torch.save({"weights": state, "optimizer": {"lr": 0.01}}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="not a state dict of tensors"):
        load_reference_checkpoint(tmp_path / "other.pth")
    torch.save({"a": Path("x")}, tmp_path / "pickle.pth")  # an arbitrary object: refused by weights_only
    with pytest.raises(DataError, match="weights_only=True"):
        load_reference_checkpoint(tmp_path / "pickle.pth")
    with pytest.raises(DataError, match="not found"):
        load_reference_checkpoint(tmp_path / "absent.pth")
    data = (tmp_path / "dp.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="unreadable released checkpoint"):
        load_reference_checkpoint(tmp_path / "cut.pth")


@pytest.mark.parametrize("dataset,labelled", [("LA", "8"), ("ACDC", "7")])
def test_import_released_run_files_and_golden_forward(golden_dir, data_root, tmp_path, dataset, labelled):
    arch, name = GOLDEN_STATES[dataset]
    run = tmp_path / "run"
    info = import_released(golden_dir / name, dataset, labelled, data_root(dataset), run / "model.pt",
                           run / "run_info.json", inference={"patch_size": [32, 32]}, device="cpu",
                           train_log_out=run / "train_log.csv", val_log_out=run / "val_log.csv")
    on_disk = json.loads((run / "run_info.json").read_text())
    assert on_disk["method"] == "released" and on_disk["seed"] == 0 and on_disk["labelled"] == labelled
    assert on_disk["run_config"]["method_label"] == RELEASED_LABEL
    # the authors selected LA weights on the test list (flagged), ACDC on val.list
    assert (on_disk["selection"], on_disk["test_set_selection"]) == (
        ("best_test", True) if dataset == "LA" else ("best_val", False))
    train = read_list(OFFICIAL / dataset / "train.list")
    if dataset == "LA":
        assert on_disk["labelled_items"] == train[:8] and on_disk["n_unlabelled_scans"] == 72
    else:
        assert on_disk["n_labelled"] == 136 and on_disk["n_labelled_scans"] == 7
    assert info.reference_tensors == len(torch.load(golden_dir / name, weights_only=True))
    assert (run / "train_log.csv").read_text().startswith("iteration")
    # the imported model reproduces the reference network's outputs
    method, saved = load_model(run / "model.pt")
    assert saved["run_config"]["released_sha256"] == on_disk["released_sha256"]
    forward = np.load(golden_dir / f"{arch}_forward.npz")
    with torch.no_grad():
        logits, features = method.inference_network()(torch.from_numpy(forward["input"]))
    np.testing.assert_allclose(logits.numpy(), forward["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features.numpy(), forward["features"], rtol=1e-4, atol=FEATURE_ATOL)


def test_import_released_bad_checkpoint_writes_nothing(data_root, tmp_path, manifest):
    state = full_size_state(manifest, "LA")
    del state["decoder.out_conv.bias"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="decoder.out_conv.bias"):
        import_released(tmp_path / "bad.pth", "LA", "8", data_root("LA"), tmp_path / "run" / "model.pt",
                        tmp_path / "run" / "run_info.json", inference={}, device="cpu")
    assert not (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / "run_info.json").exists()
