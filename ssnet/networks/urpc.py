"""URPC (Luo et al., MICCAI 2021): a VNet/UNet decoder with four outputs (1/8, 1/4, 1/2, full resolution).

Auxiliary heads read the decoder features at 1/8, 1/4 and 1/2 resolution (UNet: 3x3 conv, as the
reference ``Decoder_URPC``; VNet: 1x1x1 conv, the VNet's output-conv kind). In training their input
is perturbed (reference ``Decoder_URPC``): 1/8 by channel dropout (p = ``dropout_p``), 1/4 by
feature dropout (zero the positions whose channel-mean exceeds ``U(low, high)`` times the sample's
maximum channel-mean), 1/2 by feature noise ``x + x * U(-noise, noise)`` (one noise tensor over
C x spatial, shared by the batch). The full-resolution output is the backbone's own (unchanged,
so ``forward`` = test time = the backbone's forward). Auxiliary logits are resized to the input
size: nearest in 2D (``F.interpolate`` default, as the reference), trilinear in 3D (the reference
3D ``UnetDsv3``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .multihead import build_backbone, check_input
from .vnet import VNet


def feature_dropout(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Zero positions whose channel-mean is >= ``u * max`` of the sample (u ~ U(low, high), one draw)."""
    attention = x.mean(dim=1, keepdim=True)
    max_val = attention.flatten(1).max(dim=1).values
    u = low + (high - low) * torch.rand((), device=x.device, dtype=x.dtype)
    threshold = (max_val * u).view(-1, *([1] * (x.dim() - 1)))
    return x * (attention < threshold).to(x.dtype)


def feature_noise(x: torch.Tensor, magnitude: float) -> torch.Tensor:
    """``x + x * n`` with n ~ U(-magnitude, magnitude) of shape (1, C, *S), shared over the batch."""
    noise = (torch.rand(x.shape[1:], device=x.device, dtype=x.dtype) * 2 - 1) * magnitude
    return x + x * noise.unsqueeze(0)


class URPCNet(nn.Module):
    """``forward(x) -> (full-res logits, features)``; ``forward_pyramid(x) -> [full, 1/2, 1/4, 1/8]``
    logits, each (B, n_classes, *input size)."""

    def __init__(self, arch: str = "vnet", in_channels: int = 1, n_classes: int = 2, dropout_p: float = 0.5,
                 feature_drop_low: float = 0.7, feature_drop_high: float = 0.9, noise: float = 0.3,
                 upsample_mode: str | None = None, **network_kwargs):
        super().__init__()
        self.backbone = build_backbone(arch, in_channels=in_channels, n_classes=n_classes, **network_kwargs)
        self.n_classes = n_classes
        self.feature_channels = self.backbone.feature_channels
        self.dropout_p, self.noise = dropout_p, noise
        self.feature_drop_low, self.feature_drop_high = feature_drop_low, feature_drop_high
        self.is_3d = isinstance(self.backbone, VNet)
        if self.is_3d:
            n = self.backbone.feature_channels
            widths = [8 * n, 4 * n, 2 * n]
            self.aux_heads = nn.ModuleList(nn.Conv3d(w, n_classes, kernel_size=1) for w in widths)
        else:
            channels = self.backbone.channels
            if len(channels) < 4:
                raise ValueError(f"URPC needs a UNet with >= 4 levels, got channels={channels}")
            widths = [channels[3], channels[2], channels[1]]
            self.aux_heads = nn.ModuleList(nn.Conv2d(w, n_classes, kernel_size=3, padding=1) for w in widths)
        self.upsample_mode = upsample_mode or ("trilinear" if self.is_3d else "nearest")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(x)

    def _decoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features after each up stage, coarsest first; the last is the full-res one."""
        net = self.backbone
        skips = net.encode(x)
        out, h = [], skips[-1]
        if self.is_3d:
            for up, stage, skip in zip(net.up_convs, net.decoder_stages, reversed(skips[:-1])):
                h = stage(up(h) + skip)
                out.append(h)
            out[-1] = net.feature_dropout(out[-1])
        else:
            for block, skip in zip(net.up_blocks, reversed(skips[:-1])):
                h = block(h, skip)
                out.append(h)
        return out

    def _perturb(self, level: int, h: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return h
        if level == 0:
            dropout = F.dropout3d if self.is_3d else F.dropout2d
            return dropout(h, self.dropout_p, training=True)
        if level == 1:
            return feature_dropout(h, self.feature_drop_low, self.feature_drop_high)
        return feature_noise(h, self.noise)

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(self.backbone, x)
        features = self._decoder_features(x)
        aux_inputs = features[-4:-1]  # 1/8, 1/4, 1/2
        size = x.shape[2:]
        aux = []
        for level, (head, h) in enumerate(zip(self.aux_heads, aux_inputs)):
            logits = head(self._perturb(level, h))
            if self.upsample_mode == "nearest":
                logits = F.interpolate(logits, size=size, mode="nearest")
            else:
                logits = F.interpolate(logits, size=size, mode=self.upsample_mode, align_corners=False)
            aux.append(logits)
        full = self.backbone.out_conv(features[-1])
        return [full, aux[2], aux[1], aux[0]]
