"""2D UNet of SS-Net (ACDC): double conv blocks, max-pool down, 1x1 conv + bilinear up, concat skips.

Input (B, C_in, H, W) with H, W divisible by 2 ** (len(channels) - 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vnet import _check_spatial


class LayoutIndependentDropout(nn.Dropout):
    """``nn.Dropout`` whose element-wise mask does not depend on the input's memory layout.

    On the CPU, ``F.dropout`` draws its Bernoulli noise in the input's memory order, so a channels-last
    batch would get other masks than the same batch stored contiguously. Here a channels-last input in
    train mode is multiplied by the noise ``F.dropout`` would draw for the contiguous layout, value for
    value: ``bernoulli_(1 - p)`` of a contiguous tensor of the input's shape, divided by ``1 - p``
    (``x * noise``, as ``F.dropout`` computes it). Other inputs go through ``F.dropout`` unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0, 1) or x.is_contiguous() or x.device.type != "cpu":
            return super().forward(x)
        keep = 1.0 - self.p
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * noise.div_(keep)


class DoubleConv(nn.Module):
    """Conv3x3-BN-LeakyReLU-Dropout(p)-Conv3x3-BN-LeakyReLU: (B, C_in, H, W) -> (B, C_out, H, W).

    The activations work in place on the BatchNorm output (which BatchNorm's backward does not need),
    so training keeps one tensor fewer per activation than the reference's; the values are identical.
    The dropout draws the same masks in either memory layout (:class:`LayoutIndependentDropout`).
    """

    FUSABLE = (("conv1", "norm1", "act1"), ("conv2", "norm2", "act2"))  # ssnet.networks.fusion (inference)

    def __init__(self, in_ch: int, out_ch: int, dropout_p: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.LeakyReLU(inplace=True)
        self.dropout = LayoutIndependentDropout(dropout_p)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1)
        self.norm2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.LeakyReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.act1(self.norm1(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class UpBlock(nn.Module):
    """1x1 conv (C_deep -> C_skip), bilinear x2 (align_corners), concat [skip, up], DoubleConv."""

    def __init__(self, deep_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.reduce = nn.Conv2d(deep_ch, skip_ch, kernel_size=1)
        self.fuse = DoubleConv(2 * skip_ch, out_ch, dropout_p=0.0)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.reduce(deep), scale_factor=2, mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([skip, up], dim=1))


class UNet(nn.Module):
    """UNet; ``forward(x) -> (logits (B, n_classes, H, W), features (B, channels[0], H, W))``.

    ``dropout[i]`` is the dropout probability inside encoder block i (active in train mode only).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 4,
                 channels: tuple[int, ...] = (16, 32, 64, 128, 256),
                 dropout: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)):
        super().__init__()
        channels, dropout = tuple(channels), tuple(dropout)
        if len(channels) < 2 or len(dropout) != len(channels):
            raise ValueError(f"need >= 2 channel levels and one dropout per level, got "
                             f"channels={channels}, dropout={dropout}")
        self.channels = channels
        self.feature_channels = channels[0]
        self.n_classes = n_classes
        self.encoder_blocks = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else channels[i - 1], channels[i], p)
            for i, p in enumerate(dropout))
        self.up_blocks = nn.ModuleList(
            UpBlock(channels[i], channels[i - 1], channels[i - 1])
            for i in range(len(channels) - 1, 0, -1))
        self.out_conv = nn.Conv2d(channels[0], n_classes, kernel_size=3, padding=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder outputs at every level, full resolution first."""
        skips = [self.encoder_blocks[0](x)]
        for block in self.encoder_blocks[1:]:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        return skips

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Last decoder block's features (B, channels[0], H, W)."""
        x = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            x = block(x, skip)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_spatial(x, spatial_dims=2, factor=2 ** (len(self.channels) - 1))
        features = self.decode(self.encode(x))
        return self.out_conv(features), features
