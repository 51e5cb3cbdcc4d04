"""Inference fusion of convolution + BatchNorm + activation (ssnet/networks/fusion.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from ssnet.evaluation.inference import sliding_window_predict
from ssnet.networks import MCNet, UNet, URPCNet, VNet, build_from_reference_state
from ssnet.networks.fusion import FusedConvAct, fold_batchnorm, fused_for_inference, network_for_inference

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs PyTorch's oneDNN")
FUSED_ATOL = 1e-4  # logits and features of O(1); folding rounds each layer's scale into its weights
GOLDEN = {"vnet": ("vnet_small_state.pt", "vnet_forward.npz"), "unet": ("unet_state.pt", "unet_forward.npz")}


def _randomise_batchnorm(network: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their identity initialisation."""
    generator = torch.Generator().manual_seed(seed)
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return network.eval()


def test_fold_batchnorm_hand_computed():
    """One 1x1 convolution, two output channels: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta."""
    conv = nn.Conv2d(1, 2, 1)
    norm = nn.BatchNorm2d(2, eps=0.0).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.5]))
        norm.running_mean.copy_(torch.tensor([3.0, -0.5]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25]))
        norm.weight.copy_(torch.tensor([0.5, 2.0]))
        norm.bias.copy_(torch.tensor([0.25, -1.0]))
    weight, bias = fold_batchnorm(conv, norm)
    # channel 0: scale 0.5 / 2 = 0.25 -> W' 0.5, b' (1 - 3) * 0.25 + 0.25 = -0.25
    # channel 1: scale 2 / 0.5 = 4 -> W' -4, b' (0.5 + 0.5) * 4 - 1 = 3
    assert weight.view(-1).tolist() == [0.5, -4.0]
    assert bias.tolist() == [-0.25, 3.0]
    x = torch.tensor([[[[1.0, -2.0]]]])
    with torch.inference_mode():
        fused = FusedConvAct(conv, norm, nn.ReLU()).eval()(x)
    # channel 0: 0.5 x - 0.25 -> [0.25, -1.25] -> relu [0.25, 0]; channel 1: -4 x + 3 -> [-1, 11] -> [0, 11]
    assert fused.view(2, 2).tolist() == [[0.25, 0.0], [0.0, 11.0]]


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.01)])
def test_one_block_matches_conv_batchnorm_activation(transposed, act):
    """Regular and transposed 3D convolutions (output channels on weight dim 0 / 1), ReLU and LeakyReLU."""
    torch.manual_seed(0)
    conv = (nn.ConvTranspose3d(6, 5, 2, stride=2) if transposed else nn.Conv3d(6, 5, 3, padding=1))
    norm = _randomise_batchnorm(nn.BatchNorm3d(5))
    x = torch.randn(2, 6, 8, 8, 6)
    with torch.inference_mode():
        expected = act(norm(conv(x)))
        got = FusedConvAct(conv, norm, act).eval()(x)
    assert (expected < 0).any() == isinstance(act, nn.LeakyReLU)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, "channels_last"])
@pytest.mark.parametrize("make, shape, blocks", [
    (lambda: VNet(n_filters=4), (2, 1, 32, 32, 16), 29),  # 12 encoder + 4 down + 4 up + 9 decoder units
    (lambda: UNet(channels=(4, 8, 16, 32, 64)), (3, 1, 32, 32), 18),  # 9 double convs
    (lambda: MCNet("vnet", n_filters=4), (1, 1, 32, 32, 16), 29 + 13),  # + the 2nd decoder's 4 up, 9 units
    (lambda: MCNet("unet", n_classes=4, channels=(4, 8, 16, 32, 64)), (2, 1, 32, 32), 18 + 8),
    (lambda: URPCNet("vnet", n_filters=4), (1, 1, 32, 32, 16), 29),
])
def test_fused_networks_match_the_eval_networks(make, shape, blocks, layout):
    """Every block of the VNet / UNet and the baselines built on them fused; same outputs up
    to float rounding; the original network is left as it was (its modules, mode and weights)."""
    torch.manual_seed(0)
    network = _randomise_batchnorm(make())
    if layout == "channels_last":
        layout = torch.channels_last_3d if len(shape) == 5 else torch.channels_last
        network = network.to(memory_format=layout)
    x = torch.randn(shape).contiguous(memory_format=layout)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    network.train()
    fused = fused_for_inference(network)
    assert network.training and not fused.training
    assert sum(isinstance(m, FusedConvAct) for m in fused.modules()) == blocks
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.BatchNorm1d)
                   for m in fused.modules())
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())
    with torch.inference_mode():
        expected, got = network.eval()(x), fused(x)
    expected, got = (expected, got) if isinstance(expected, tuple) else ((expected,), (got,))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["vnet", "unet"])
def test_fused_golden_forward_parity(golden_dir, arch):
    """The fused copy of the reference-weighted network reproduces the reference's eval forward, within
    ``FUSED_ATOL`` (measured: 2.2e-5 on the VNet's logits, 5.5e-5 on its features, 4e-6 / 1.3e-5 on the
    UNet's; the unfused network, tests/test_networks.py, matches at 1e-5 + 1e-4 relative)."""
    state, arrays = torch.load(golden_dir / GOLDEN[arch][0], weights_only=True), np.load(golden_dir / GOLDEN[arch][1])
    network, _ = build_from_reference_state(arch, state)
    with torch.inference_mode():
        logits, features = fused_for_inference(network)(torch.from_numpy(arrays["input"]))
    np.testing.assert_allclose(logits.numpy(), arrays["logits"], rtol=1e-4, atol=FUSED_ATOL)
    np.testing.assert_allclose(features.numpy(), arrays["features"], rtol=1e-4, atol=FUSED_ATOL)


def test_sliding_window_prediction_is_the_same_fused():
    torch.manual_seed(0)
    network = _randomise_batchnorm(VNet(n_filters=4)).to(memory_format=torch.channels_last_3d)
    image = np.random.default_rng(0).standard_normal((40, 36, 20)).astype(np.float32)
    kwargs = {"patch": (32, 32, 16), "stride_xy": 6, "stride_z": 3, "batch_size": 3}
    pred, prob = sliding_window_predict(network, image, **kwargs)
    fused_pred, fused_prob = sliding_window_predict(fused_for_inference(network), image, **kwargs)
    assert 0 < pred.sum() < pred.size
    np.testing.assert_allclose(fused_prob, prob, atol=1e-5)
    near_tie = np.abs(prob - 0.5) < 1e-5
    assert np.array_equal(fused_pred[~near_tie], pred[~near_tie])


def test_network_for_inference_follows_the_setting_and_the_device():
    network = VNet(n_filters=4)
    assert network_for_inference(network, {"fuse_batchnorm": False}, torch.device("cpu")) is network
    assert network_for_inference(network, {}, torch.device("cpu")) is network
    assert network_for_inference(network, {"fuse_batchnorm": True}, torch.device("cuda")) is network
    fused = network_for_inference(network, {"fuse_batchnorm": True}, "cpu")
    assert fused is not network and any(isinstance(m, FusedConvAct) for m in fused.modules())


def test_fused_block_refuses_training_and_what_it_cannot_fuse():
    conv, norm = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2).eval()
    fused = FusedConvAct(conv, norm, nn.ReLU())
    with pytest.raises(RuntimeError, match="for inference"):
        fused.train()(torch.zeros(1, 1, 4, 4))
    with pytest.raises(TypeError, match="Sigmoid"):
        FusedConvAct(conv, norm, nn.Sigmoid())
    with pytest.raises(TypeError, match="grouped transposed"):
        FusedConvAct(nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2), nn.BatchNorm2d(4).eval(), nn.ReLU())


def test_grouped_convolution_and_plain_batchnorm_fold():
    """Groups on a regular convolution; BatchNorm without affine parameters; a convolution without bias."""
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(6, affine=False)
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        expected = torch.relu(norm.eval()(conv(x)))
        got = FusedConvAct(conv, norm, nn.ReLU()).eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fusing_twice_and_networks_fusion_cannot_run():
    network = _randomise_batchnorm(VNet(n_filters=4))
    fused = fused_for_inference(network)
    again = fused_for_inference(fused)
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.inference_mode():
        torch.testing.assert_close(again(x)[0], fused(x)[0], rtol=0, atol=0)
    assert network_for_inference(network.double(), {"fuse_batchnorm": True}, "cpu") is network
