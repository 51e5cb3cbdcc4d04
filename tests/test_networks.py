"""Networks: parameter counts, reference-name mapping, golden forward parity, dropout behaviour."""

import numpy as np
import pytest
import torch

from conftest import FEATURE_ATOL
from ssnet.networks import (SSNetHeads, UNet, VNet, build_from_reference_state, build_network,
                            count_parameters, load_reference_state, split_reference_state,
                            to_reference_state)
from ssnet.networks.reference_names import heads_key_pairs, network_key_pairs

CASES = {"vnet": ("vnet_small_state.pt", "vnet_forward.npz"),
         "unet": ("unet_state.pt", "unet_forward.npz")}


def _state(golden_dir, arch):
    return torch.load(golden_dir / CASES[arch][0], weights_only=True)


def _arrays(golden_dir, arch):
    return np.load(golden_dir / CASES[arch][1])


def _full_size(arch):
    """The paper's full-size network and heads (VNet: 2 classes, UNet: 4 classes)."""
    if arch == "vnet":
        return VNet(n_filters=16, n_classes=2), SSNetHeads(2)
    return UNet(n_classes=4), SSNetHeads(4)


def _manifest_keys(manifest, arch):
    case = manifest["cases"][arch]
    return case["state_dict_keys_n_filters_16" if arch == "vnet" else "state_dict_keys"]


def test_parameter_counts_match_paper_networks():
    assert count_parameters(VNet(n_filters=16)) == 9_448_866
    assert count_parameters(UNet()) == 1_813_764
    assert count_parameters(SSNetHeads(2)) == 8_452
    assert count_parameters(SSNetHeads(4)) == 13_064


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_full_size_reference_keys_map_one_to_one(manifest, arch):
    network, heads = _full_size(arch)
    ours = to_reference_state(network, heads)
    expected = _manifest_keys(manifest, arch)
    assert list(ours) == [name for name, *_ in expected]
    params = set()
    for module, pairs in ((network, network_key_pairs(network)), (heads, heads_key_pairs(heads))):
        names = dict(module.named_parameters())
        params |= {ref for ref, our in pairs if our in names}
    for name, shape, dtype, kind in expected:
        assert list(ours[name].shape) == shape, name
        assert str(ours[name].dtype) == f"torch.{dtype}", name
        assert (name in params) == (kind == "param"), name


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_full_size_param_counts_match_manifest(manifest, arch):
    network, heads = _full_size(arch)
    case = manifest["cases"][arch]
    counts = case.get("param_counts_n_filters_16") or case["param_counts"]
    assert count_parameters(network) == counts["segmentation"]
    assert count_parameters(heads) == counts["heads"]


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_golden_forward_parity(golden_dir, manifest, arch):
    network, heads = build_from_reference_state(arch, _state(golden_dir, arch))
    assert heads is not None
    arrays = _arrays(golden_dir, arch)
    tol = manifest["cases"][arch].get("tolerance", {"rtol": 1e-4, "atol": 1e-5})
    network.eval()
    with torch.no_grad():
        logits, features = network(torch.from_numpy(arrays["input"]))
    assert features.shape[1] == network.feature_channels
    np.testing.assert_allclose(logits.numpy(), arrays["logits"], rtol=tol["rtol"], atol=tol["atol"])
    np.testing.assert_allclose(features.numpy(), arrays["features"],
                               rtol=tol["rtol"], atol=max(tol["atol"], FEATURE_ATOL))


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_round_trip_is_exact(golden_dir, arch):
    state = _state(golden_dir, arch)
    network, heads = build_from_reference_state(arch, state)
    back = to_reference_state(network, heads)
    assert list(back) == list(state)
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


def test_split_state_loads_network_alone(golden_dir):
    network_part, heads_part = split_reference_state(_state(golden_dir, "unet"))
    assert all(k.startswith(("encoder.", "decoder.")) for k in network_part)
    assert heads_part and not any(k.startswith(("encoder.", "decoder.")) for k in heads_part)
    load_reference_state(UNet(), network_part)


def _fresh(arch, state):
    network, heads = build_from_reference_state(arch, state)
    return type(network)(**_ctor(network)), SSNetHeads(heads.n_classes, heads.dim_in, heads.feat_dim)


def _ctor(network):
    if isinstance(network, VNet):
        return {"n_filters": network.feature_channels, "n_classes": network.n_classes}
    return {"channels": network.channels, "n_classes": network.n_classes}


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_missing_key_is_named(golden_dir, arch):
    state = _state(golden_dir, arch)
    network, heads = _fresh(arch, state)
    dropped = list(state)[5]
    del state[dropped]
    with pytest.raises(ValueError, match=dropped.replace(".", r"\.")):
        load_reference_state(network, state, heads)


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_extra_key_is_named(golden_dir, arch):
    state = _state(golden_dir, arch)
    network, heads = _fresh(arch, state)
    state["decoder.not_a_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"decoder\.not_a_layer\.weight"):
        load_reference_state(network, state, heads)


def test_head_keys_without_heads_are_unmapped(golden_dir):
    state = _state(golden_dir, "unet")
    with pytest.raises(ValueError, match=r"unmapped.*projection_head\.0\.weight"):
        load_reference_state(UNet(n_classes=state["decoder.out_conv.weight"].shape[0]), state)


def test_shape_mismatch_is_reported_and_nothing_loaded(golden_dir):
    state = _state(golden_dir, "vnet")
    n_filters = state["encoder.block_one.conv.0.weight"].shape[0]
    network = VNet(n_filters=2 * n_filters, n_classes=state["decoder.out_conv.weight"].shape[0])
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatches"):
        load_reference_state(network, split_reference_state(state)[0])
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


def _two_forwards(network, x):
    with torch.no_grad():
        return network(x), network(x)


@pytest.mark.parametrize("make, shape", [
    (lambda flag: VNet(n_filters=2, dropout=flag), (2, 1, 16, 16, 16)),
    (lambda flag: UNet(channels=(4, 8, 8, 16, 16), dropout=(0.5,) * 5 if flag else (0.0,) * 5),
     (2, 1, 32, 32)),
])
def test_dropout_only_in_train_mode(make, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    network = make(True)
    (a, fa), (b, fb) = _two_forwards(network.train(), x)
    assert not torch.equal(a, b) and not torch.equal(fa, fb)
    (a, fa), (b, fb) = _two_forwards(network.eval(), x)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    (a, _), (b, _) = _two_forwards(make(False).train(), x)
    assert torch.equal(a, b)


def test_vnet_deterministic_prefix_draws_no_randomness():
    """forward = forward_from_prefix(deterministic_prefix(x)) in train mode, and the prefix (the encoder
    before the bottleneck dropout) leaves the random state alone."""
    torch.manual_seed(0)
    network, x = VNet(n_filters=2).train(), torch.randn(2, 1, 16, 16, 16)
    state = torch.get_rng_state()
    prefix = network.deterministic_prefix(x)
    assert torch.equal(torch.get_rng_state(), state) and len(prefix) == 5
    torch.manual_seed(3)
    logits, features = network.forward_from_prefix(prefix)
    torch.manual_seed(3)
    full_logits, full_features = network(x)
    assert torch.equal(logits, full_logits) and torch.equal(features, full_features)
    batch_norms = {id(m) for root in network.prefix_modules() for m in root.modules()
                   if isinstance(m, torch.nn.BatchNorm3d)}
    assert len(batch_norms) == 12 + 4  # the encoder stages' units and the down convolutions


def test_output_shapes_3d_and_2d():
    vnet = VNet(in_channels=2, n_classes=3, n_filters=2).eval()
    logits, feats = vnet(torch.randn(1, 2, 16, 32, 16))
    assert logits.shape == (1, 3, 16, 32, 16) and feats.shape == (1, 2, 16, 32, 16)
    unet = UNet(in_channels=1, n_classes=2, channels=(4, 8, 16), dropout=(0.0, 0.1, 0.2)).eval()
    logits, feats = unet(torch.randn(2, 1, 12, 8))
    assert logits.shape == (2, 2, 12, 8) and feats.shape == (2, 4, 12, 8)
    with pytest.raises(ValueError, match="divisible"):
        vnet(torch.randn(1, 2, 8, 16, 16))


def test_heads_shapes():
    heads = SSNetHeads(n_classes=3, dim_in=6, feat_dim=10).eval()
    z = heads.project(torch.randn(7, 6))
    assert z.shape == (7, 10) and heads.predict(z).shape == (7, 10)
    assert heads.selector(2)(z).shape == (7, 1) and heads.memory_selector(0)(z).shape == (7, 1)
    assert heads.selector(1) is not heads.memory_selector(1)


def test_build_network_dispatch_and_error():
    assert isinstance(build_network("vnet", n_filters=2), VNet)
    assert isinstance(build_network("UNet", channels=(4, 8), dropout=(0.0, 0.0)), UNet)
    with pytest.raises(ValueError, match="vnet.*unet"):
        build_network("resnet")
