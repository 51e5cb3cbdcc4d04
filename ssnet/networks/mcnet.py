"""MC-Net (Wu et al., MICCAI 2021): one shared encoder, two decoders differing only in upsampling.

Decoder 1 is the backbone's own decoder (VNet: transposed conv; UNet: 1x1 conv + bilinear x2).
Decoder 2 upsamples the other way: VNet: trilinear x2 (align_corners) + 3x3x3 conv + BN + ReLU
(reference ``Upsampling_function(mode_interpolation=1)``); UNet: 2x2 stride-2 transposed conv
(reference ``UpBlock(mode_upsampling=0)``). Everything else matches decoder 1 (VNet: same conv
stages and Dropout3d(0.5) before the 1x1x1 output conv when dropout is on; UNet: conv blocks
without dropout and a 3x3 output conv). Test time uses decoder 1 only: ``forward`` is exactly the
backbone's forward, ``forward_all`` returns both decoders' logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .multihead import build_backbone, check_input
from .unet import DoubleConv
from .vnet import DECODER_DEPTHS, ENCODER_DEPTHS, ConvStack, VNet


class InterpolatingUp3d(nn.Module):
    """Trilinear x2 (align_corners) + Conv3d 3x3x3 + BatchNorm3d + ReLU."""

    FUSABLE = (("conv", "norm", "act"),)  # ssnet.networks.fusion (inference)

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.up(x))))


class VNetInterpolatingDecoder(nn.Module):
    """A VNet decoder whose upsampling is trilinear interpolation + conv: skips -> logits."""

    def __init__(self, n_filters: int, n_classes: int, dropout: bool):
        super().__init__()
        widths = [n_filters * 2 ** level for level in range(len(ENCODER_DEPTHS))][::-1]
        self.up_convs = nn.ModuleList(InterpolatingUp3d(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        self.decoder_stages = nn.ModuleList(
            ConvStack(widths[i + 1], widths[i + 1], depth) for i, depth in enumerate(DECODER_DEPTHS))
        self.feature_dropout = nn.Dropout3d(0.5) if dropout else nn.Identity()
        self.out_conv = nn.Conv3d(n_filters, n_classes, kernel_size=1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for up, stage, skip in zip(self.up_convs, self.decoder_stages, reversed(skips[:-1])):
            x = stage(up(x) + skip)
        return self.out_conv(self.feature_dropout(x))


class TransposedUp2d(nn.Module):
    """ConvTranspose2d 2x2 stride 2 (C_deep -> C_skip), concat [skip, up], conv block without dropout."""

    def __init__(self, deep_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(deep_ch, skip_ch, kernel_size=2, stride=2)
        self.fuse = DoubleConv(2 * skip_ch, out_ch, dropout_p=0.0)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([skip, self.up(deep)], dim=1))


class UNetTransposedDecoder(nn.Module):
    """A UNet decoder whose upsampling is a transposed conv: skips -> logits."""

    def __init__(self, channels: tuple[int, ...], n_classes: int):
        super().__init__()
        self.up_blocks = nn.ModuleList(
            TransposedUp2d(channels[i], channels[i - 1], channels[i - 1]) for i in range(len(channels) - 1, 0, -1))
        self.out_conv = nn.Conv2d(channels[0], n_classes, kernel_size=3, padding=1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            x = block(x, skip)
        return self.out_conv(x)


class MCNet(nn.Module):
    """``forward(x) -> (logits of decoder 1, features)``; ``forward_all(x) -> [logits_1, logits_2]``."""

    def __init__(self, arch: str = "vnet", in_channels: int = 1, n_classes: int = 2, **network_kwargs):
        super().__init__()
        self.backbone = build_backbone(arch, in_channels=in_channels, n_classes=n_classes, **network_kwargs)
        self.n_classes = n_classes
        self.feature_channels = self.backbone.feature_channels
        if isinstance(self.backbone, VNet):
            dropout = isinstance(self.backbone.feature_dropout, nn.Dropout3d)
            self.decoder2 = VNetInterpolatingDecoder(self.backbone.feature_channels, n_classes, dropout)
        else:
            self.decoder2 = UNetTransposedDecoder(self.backbone.channels, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(x)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(self.backbone, x)
        skips = self.backbone.encode(x)  # the bottleneck dropout is drawn once and shared, as the reference
        return [self.backbone.out_conv(self.backbone.decode(skips)), self.decoder2(skips)]
