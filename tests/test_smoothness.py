"""VAT smoothness: parity with the official VAT3d / VAT2d, BatchNorm handling, perturbation size."""

import numpy as np
import pytest
import torch
from torch import nn

from ssnet.losses import soft_dice_loss
from ssnet.networks import build_from_reference_state
from ssnet.networks.reference_names import network_key_pairs, to_reference_state
from ssnet.smoothness import (frozen_running_stats, l2_normalize_per_sample, random_unit_direction,
                              recompute_in_backward, repeated_running_stats_update, soft_dice_distance,
                              vat_loss)

DISTANCE = {"vat3d": "binary_dice", "vat2d": "soft_dice"}


def arch_of(state: dict) -> str:
    """'vnet' or 'unet', from the reference keys of a golden state file."""
    return "vnet" if "encoder.block_one.conv.0.weight" in state else "unet"


def load_case_model(golden_dir, case: dict):
    """(network, heads, reference state) of a manifest case, built from its ``model_state`` file."""
    state = torch.load(golden_dir / case["files"]["model_state"], weights_only=True)
    network, heads = build_from_reference_state(arch_of(state), state)
    return network, heads, state


def assert_grad_close(actual: torch.Tensor | None, expected: torch.Tensor, name: str) -> None:
    """The golden README's gradient check: max|a - b| <= 1e-6 + 1e-3 * max|b| per tensor."""
    actual = torch.zeros_like(expected) if actual is None else actual.detach()
    bound = 1e-6 + 1e-3 * expected.abs().max().item()
    err = (actual.to(expected.dtype) - expected).abs().max().item()
    assert err <= bound, f"{name}: max |a - b| = {err:.3g} > {bound:.3g}"


def assert_buffers_close(actual: dict, expected: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """BN buffers: floats within tolerance, ``num_batches_tracked`` exact."""
    for key, value in expected.items():
        mine = actual[key]
        if value.dtype == torch.int64:
            assert int(mine) == int(value), f"{key}: {int(mine)} != {int(value)}"
        else:
            np.testing.assert_allclose(mine.numpy(), value.numpy(), rtol=rtol, atol=atol, err_msg=key)


def _run_golden(golden_dir, manifest, name):
    case = manifest["cases"][name]
    network, heads, state = load_case_model(golden_dir, case)
    network.train()
    for module in network.modules():  # the golden run switched dropout off for determinism
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    arrays = np.load(golden_dir / case["files"]["arrays"])
    ctor = case["constructor"]
    result = vat_loss(network, torch.from_numpy(arrays["input"]), xi=ctor["xi"], eps=ctor["epi"],
                      power_iterations=ctor["ip"], distance=DISTANCE[name],
                      uniform_draw=torch.from_numpy(arrays["rand_draw"]))
    return case, network, heads, state, arrays, result


@pytest.mark.parametrize("name", ["vat3d", "vat2d"])
def test_vat_matches_reference(golden_dir, manifest, name):
    case, network, heads, state, arrays, result = _run_golden(golden_dir, manifest, name)
    tol = case["tolerance"]
    assert abs(result.loss.item() - case["scalars"]["loss"]) <= tol["loss_atol"]
    np.testing.assert_allclose(result.d_unit.numpy(), arrays["d_unit"], rtol=tol["d_unit_rtol"],
                               atol=tol["d_unit_atol"])
    np.testing.assert_allclose(result.d_adv.numpy(), arrays["d_adv"], rtol=0, atol=tol["d_adv_atol"])

    # BatchNorm: "before" is the state file; "after" = exactly one clean train-mode update.
    bn_before = torch.load(golden_dir / case["files"]["bn_before"], weights_only=True)
    assert_buffers_close({k: state[k] for k in bn_before}, bn_before, rtol=0, atol=0)
    bn_after = torch.load(golden_dir / case["files"]["bn_after"], weights_only=True)
    assert_buffers_close(to_reference_state(network, heads), bn_after, **tol["bn_buffers"])

    # Parameter gradients of the returned loss (the power iteration left none behind).
    assert all(p.grad is None for p in network.parameters())
    result.loss.backward()
    ours = dict(network.named_parameters())
    name_of = dict(network_key_pairs(network))
    for key, expected in torch.load(golden_dir / case["files"]["grads_selected"], weights_only=True).items():
        assert_grad_close(ours[name_of[key]].grad, expected, key)
    norm_sum = torch.load(golden_dir / case["files"]["grad_norm_sum"], weights_only=True)
    for key, expected in norm_sum.items():
        grad = ours[name_of[key]].grad.double()
        mine = torch.stack([torch.linalg.vector_norm(grad), grad.sum()])
        assert torch.all((mine - expected).abs() <= 1e-6 + 1e-3 * expected.abs()), key


class _Recorder(nn.Module):
    """Conv + BN + 1x1 conv; remembers every input it sees."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, classes, 1))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.body(x), None


def test_final_perturbation_has_norm_eps_per_sample():
    torch.manual_seed(0)
    net = _Recorder().train()
    x = torch.randn(3, 1, 12, 12) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1, 1)
    vat_loss(net, x, xi=10.0, eps=6.0)
    assert len(net.inputs) == 3  # clean target, one power iteration, final pass
    r_adv = (net.inputs[-1] - x).reshape(3, -1)
    np.testing.assert_allclose(torch.linalg.vector_norm(r_adv, dim=1).numpy(), 6.0, rtol=1e-5)
    r_power = (net.inputs[1] - x).reshape(3, -1)
    np.testing.assert_allclose(torch.linalg.vector_norm(r_power, dim=1).numpy(), 10.0, rtol=1e-5)


def test_bn_statistics_update_once_and_only_in_the_clean_pass():
    torch.manual_seed(0)
    net = _Recorder().train()
    bn = net.body[1]
    x = torch.randn(2, 1, 8, 8)
    vat_loss(net, x, power_iterations=2)
    assert int(bn.num_batches_tracked) == 1
    # a supplied target skips the clean pass: no update at all
    before = {k: v.clone() for k, v in net.state_dict().items()}
    vat_loss(net, x, target=torch.full((2, 2, 8, 8), 0.5))
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(m.track_running_stats for m in net.modules() if hasattr(m, "track_running_stats"))


def test_vat_draw_comes_from_the_global_generator():
    torch.manual_seed(123)
    first = random_unit_direction((2, 1, 4, 4))
    torch.manual_seed(123)
    np.testing.assert_array_equal(first.numpy(), random_unit_direction((2, 1, 4, 4)).numpy())
    np.testing.assert_allclose(torch.linalg.vector_norm(first.reshape(2, -1), dim=1).numpy(), 1.0, rtol=1e-6)


def test_l2_normalize_matches_reference_formula():
    d = torch.randn(3, 2, 5, 4)
    expected = d / (d.reshape(3, -1).norm(dim=1).view(3, 1, 1, 1) + 1e-8)
    torch.testing.assert_close(l2_normalize_per_sample(d), expected)


def test_soft_dice_distance_uses_all_channels():
    a = torch.softmax(torch.randn(2, 3, 6, 6), 1)
    b = torch.softmax(torch.randn(2, 3, 6, 6), 1)
    torch.testing.assert_close(soft_dice_distance(a, b), soft_dice_loss(a, b))
    net = _Recorder(classes=3).train()
    assert torch.isfinite(vat_loss(net, torch.randn(2, 1, 6, 6), distance="soft_dice").loss)


def test_repeated_running_stats_update_equals_two_passes():
    torch.manual_seed(0)
    twice, once = nn.BatchNorm1d(5), nn.BatchNorm1d(5)
    x = torch.randn(16, 5) * 3 + 1
    twice(x)
    twice(x)
    with repeated_running_stats_update(once, 2):
        once(x)
    torch.testing.assert_close(once.running_mean, twice.running_mean)
    torch.testing.assert_close(once.running_var, twice.running_var)
    assert int(once.num_batches_tracked) == 2 and once.momentum == 0.1


def test_frozen_running_stats_restores_flags():
    bn = nn.BatchNorm2d(3).train()
    with frozen_running_stats(bn):
        bn(torch.randn(2, 3, 4, 4))
    assert bn.track_running_stats and int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.zeros(3))


def test_recompute_in_backward_matches_plain_call_with_bn_and_dropout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.5),
                        nn.Conv2d(4, 3, 1)).train()
    x = torch.randn(2, 1, 8, 8)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    results = []
    for recompute in (False, True):
        net.load_state_dict(initial)
        net.zero_grad()
        torch.manual_seed(5)  # same dropout masks in both runs
        out = recompute_in_backward(net, x, stats_module=net) if recompute else net(x)
        (out ** 2).mean().backward()
        state = {k: v.clone() for k, v in net.state_dict().items()}
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()], state))
    (out_a, grads_a, state_a), (out_b, grads_b, state_b) = results
    torch.testing.assert_close(out_a, out_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)
    for key in state_a:  # one update in both: the recomputation leaves the statistics alone
        torch.testing.assert_close(state_a[key], state_b[key])
    assert int(state_b["1.num_batches_tracked"]) == 1
