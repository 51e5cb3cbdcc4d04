"""ssnet.seeding.set_deterministic: deterministic kernels without the NaN fill of new tensors."""

import torch

from ssnet.networks import UNet
from ssnet.seeding import set_deterministic


def _gradients(fill: bool) -> list[torch.Tensor]:
    """Parameter gradients of one seeded train-mode UNet forward + backward (dropout on)."""
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.manual_seed(0)
    net = UNet(n_classes=4, channels=[2, 4, 8, 16, 32]).to(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    net(x)[0].square().mean().backward()
    return [p.grad for p in net.parameters()]


def test_set_deterministic_keeps_deterministic_kernels_without_filling_new_memory():
    saved = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
        filled, unfilled = _gradients(True), _gradients(False)
        assert all(torch.equal(a, b) for a, b in zip(filled, unfilled))
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.utils.deterministic.fill_uninitialized_memory = saved[1]
