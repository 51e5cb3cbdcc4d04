"""3D VNet of SS-Net (LA): plain (non-residual) conv stages, strided-conv down, transposed-conv up.

Channels n, 2n, 4n, 8n, 16n (n = ``n_filters``); encoder stages have 1, 2, 3, 3, 3 convs, decoder
stages 3, 3, 2, 1; skips are added. Input (B, C_in, D, H, W) with D, H, W divisible by 16.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODER_DEPTHS = (1, 2, 3, 3, 3)
DECODER_DEPTHS = (3, 3, 2, 1)
DOWNSAMPLING_FACTOR = 2 ** (len(ENCODER_DEPTHS) - 1)


class ConvNormReLU(nn.Module):
    """Conv3d (or ConvTranspose3d) + BatchNorm3d + ReLU: (B, C_in, ...) -> (B, C_out, ...)."""

    FUSABLE = (("conv", "norm", "act"),)  # ssnet.networks.fusion: fused into one convolution for inference

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 transposed: bool = False):
        super().__init__()
        conv_type = nn.ConvTranspose3d if transposed else nn.Conv3d
        padding = kernel // 2 if stride == 1 else 0
        self.conv = conv_type(in_ch, out_ch, kernel, stride=stride, padding=padding)
        self.norm = nn.BatchNorm3d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvStack(nn.Module):
    """``depth`` 3x3x3 ConvNormReLU units, no residual: (B, C_in, ...) -> (B, C_out, ...)."""

    def __init__(self, in_ch: int, out_ch: int, depth: int):
        super().__init__()
        self.units = nn.ModuleList(
            ConvNormReLU(in_ch if i == 0 else out_ch, out_ch) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x


class VNet(nn.Module):
    """VNet; ``forward(x) -> (logits (B, n_classes, D, H, W), features (B, n_filters, D, H, W))``.

    With ``dropout`` and in train mode, Dropout3d(0.5) acts on the bottleneck and on the full-res
    decoder features; the returned features are the ones after dropout (they feed the output conv).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 16,
                 dropout: bool = True):
        super().__init__()
        widths = [n_filters * 2 ** level for level in range(len(ENCODER_DEPTHS))]
        self.feature_channels = n_filters
        self.n_classes = n_classes
        self.encoder_stages = nn.ModuleList(
            ConvStack(in_channels if i == 0 else widths[i], widths[i], depth)
            for i, depth in enumerate(ENCODER_DEPTHS))
        self.down_convs = nn.ModuleList(
            ConvNormReLU(widths[i], widths[i + 1], kernel=2, stride=2)
            for i in range(len(widths) - 1))
        up_widths = widths[::-1]  # 16n, 8n, 4n, 2n, n
        self.up_convs = nn.ModuleList(
            ConvNormReLU(up_widths[i], up_widths[i + 1], kernel=2, stride=2, transposed=True)
            for i in range(len(up_widths) - 1))
        self.decoder_stages = nn.ModuleList(
            ConvStack(up_widths[i + 1], up_widths[i + 1], depth)
            for i, depth in enumerate(DECODER_DEPTHS))
        self.out_conv = nn.Conv3d(n_filters, n_classes, kernel_size=1)
        self.bottleneck_dropout = nn.Dropout3d(0.5) if dropout else nn.Identity()
        self.feature_dropout = nn.Dropout3d(0.5) if dropout else nn.Identity()

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder outputs at every level, full resolution first; the last is the bottleneck."""
        return self.dropout_encoded(self.deterministic_prefix(x))

    def deterministic_prefix(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder outputs before the bottleneck dropout: the part of a train-mode forward that draws
        no randomness (``forward(x) == forward_from_prefix(deterministic_prefix(x))``)."""
        _check_spatial(x, spatial_dims=3, factor=DOWNSAMPLING_FACTOR)
        skips = [self.encoder_stages[0](x)]
        for down, stage in zip(self.down_convs, self.encoder_stages[1:]):
            skips.append(stage(down(skips[-1])))
        return skips

    def prefix_modules(self) -> list[nn.Module]:
        """The modules that :meth:`deterministic_prefix` runs."""
        return [self.encoder_stages, self.down_convs]

    def dropout_encoded(self, prefix: list[torch.Tensor]) -> list[torch.Tensor]:
        """``prefix`` with the bottleneck dropout applied to its last level (a new list)."""
        return [*prefix[:-1], self.bottleneck_dropout(prefix[-1])]

    def forward_from_prefix(self, prefix: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) from :meth:`deterministic_prefix`'s output: the random rest of a forward."""
        features = self.decode(self.dropout_encoded(prefix))
        return self.out_conv(features), features

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Full-resolution decoder features (B, n_filters, D, H, W) from ``encode``'s outputs."""
        x = skips[-1]
        for up, stage, skip in zip(self.up_convs, self.decoder_stages, reversed(skips[:-1])):
            x = stage(up(x) + skip)
        return self.feature_dropout(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_from_prefix(self.deterministic_prefix(x))


def _check_spatial(x: torch.Tensor, spatial_dims: int, factor: int) -> None:
    """Raise ValueError unless x is (B, C, *spatial) with every spatial size divisible by factor."""
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"expected a {spatial_dims + 2}D input (B, C, ...), got shape "
                         f"{tuple(x.shape)}")
    if any(size % factor for size in x.shape[2:]):
        raise ValueError(f"spatial sizes {tuple(x.shape[2:])} must be divisible by {factor}")
