"""URPC (Luo et al., MICCAI 2021): a VNet/UNet decoder with four outputs (1/8, 1/4, 1/2, full resolution).

Auxiliary heads read the decoder features at 1/8, 1/4 and 1/2 resolution (UNet: 3x3 conv, as the
SSL4MIS ``Decoder_URPC``; VNet: 1x1x1 conv, as the SSL4MIS 3D ``UnetDsv3``). Their logits are resized
to the input size: nearest in 2D (``F.interpolate`` default, as ``Decoder_URPC``), trilinear in 3D
(``UnetDsv3``). Two training-time perturbation designs (``perturbation``):

- ``pyramid`` (SSL4MIS ``networks/unet.py``: ``Decoder_URPC``; the 2D default): only the auxiliary
  heads' inputs are perturbed. 1/8: dropout with p = ``dropout_p``, element-wise (``Dropout``:
  ``F.dropout``) or channel-wise (``aux_dropout_mode="channel"``: ``F.dropout2d/3d``, SSL4MIS before
  commit 9c2d468); 1/4: feature dropout (zero the positions whose channel-mean is >= u times the
  sample's maximum channel-mean, one u ~ U(low, high) per call from numpy's global generator, as
  ``FeatureDropout``); 1/2: feature noise ``x * n + x``, n ~ U(-noise, noise) of shape (C, *S) shared
  by the batch (``FeatureNoise``). The full-resolution output is the backbone's own (VNet: after its
  Dropout3d(0.5) feature dropout when the backbone has dropout).
- ``decoder_dropout`` (SSL4MIS ``networks/unet_3D_dv_semi.py``, trained by
  ``train_uncertainty_rectified_pyramid_consistency_3D.py``; the 3D default): channel dropout
  (Dropout3d / Dropout2d) on the output of each of the last four decoder stages with
  p = ``stage_dropout`` (1/8, 1/4, 1/2, full; reference 0.5, 0.3, 0.2, 0.1), inside the decoder path:
  the dropped features feed both the next stage and the side output. On a VNet it replaces the
  backbone's full-resolution feature dropout; the backbone's bottleneck dropout stays.

Random draws, in order: backbone encoder dropout, then the perturbations from coarse to fine.
``forward`` is the backbone's forward (test time: no perturbation, full-resolution output).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .multihead import build_backbone, check_input
from .vnet import VNet

PERTURBATIONS = ("pyramid", "decoder_dropout")


def feature_dropout(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Zero positions whose channel-mean is >= ``u * max`` of the sample; u = ``np.random.uniform(low, high)``.

    x: (B, C, *S) -> (B, C, *S) (reference ``FeatureDropout``, including its numpy draw).
    """
    attention = x.mean(dim=1, keepdim=True)
    max_val = attention.flatten(1).max(dim=1).values
    threshold = (max_val * np.random.uniform(low, high)).view(-1, *([1] * (x.dim() - 1)))
    return x * (attention < threshold).to(x.dtype)


def feature_noise(x: torch.Tensor, magnitude: float) -> torch.Tensor:
    """``x * n + x`` with n = low + rand * (high - low) of shape (1, C, *S), low/high = -/+ magnitude.

    The same arithmetic as ``torch.distributions.Uniform(-magnitude, magnitude).sample`` (reference
    ``FeatureNoise``), drawn on x's device.
    """
    low = torch.tensor(-magnitude, dtype=x.dtype, device=x.device)
    high = torch.tensor(magnitude, dtype=x.dtype, device=x.device)
    noise = low + torch.rand(x.shape[1:], dtype=x.dtype, device=x.device) * (high - low)
    return x.mul(noise.unsqueeze(0)) + x


class URPCNet(nn.Module):
    """``forward(x) -> (full-res logits, features)``; ``forward_pyramid(x) -> [full, 1/2, 1/4, 1/8]``
    logits, each (B, n_classes, *input size)."""

    def __init__(self, arch: str = "vnet", in_channels: int = 1, n_classes: int = 2, dropout_p: float = 0.5,
                 feature_drop_low: float = 0.7, feature_drop_high: float = 0.9, noise: float = 0.3,
                 upsample_mode: str | None = None, perturbation: str | None = None,
                 aux_dropout_mode: str = "element", stage_dropout: tuple[float, ...] = (0.5, 0.3, 0.2, 0.1),
                 **network_kwargs):
        super().__init__()
        self.backbone = build_backbone(arch, in_channels=in_channels, n_classes=n_classes, **network_kwargs)
        self.n_classes = n_classes
        self.feature_channels = self.backbone.feature_channels
        self.is_3d = isinstance(self.backbone, VNet)
        self.perturbation = perturbation or ("decoder_dropout" if self.is_3d else "pyramid")
        if self.perturbation not in PERTURBATIONS or aux_dropout_mode not in ("element", "channel"):
            raise ValueError(f"unknown perturbation {self.perturbation!r} / aux_dropout_mode {aux_dropout_mode!r}")
        if len(stage_dropout) != 4:
            raise ValueError(f"stage_dropout needs 4 rates (1/8, 1/4, 1/2, full), got {stage_dropout}")
        self.dropout_p, self.noise, self.aux_dropout_mode = dropout_p, noise, aux_dropout_mode
        self.feature_drop_low, self.feature_drop_high = feature_drop_low, feature_drop_high
        channel_dropout = nn.Dropout3d if self.is_3d else nn.Dropout2d
        self.stage_dropouts = nn.ModuleList(channel_dropout(p) for p in stage_dropout)
        if self.is_3d:
            n = self.backbone.feature_channels
            self.aux_heads = nn.ModuleList(nn.Conv3d(w, n_classes, kernel_size=1) for w in (8 * n, 4 * n, 2 * n))
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
        """Decoder features after each up stage, coarsest first; the last is the full-res one.

        ``decoder_dropout`` (training): the last four stages' outputs go through ``stage_dropouts``
        before the next stage. ``pyramid``: VNet's own feature dropout on the full-res features.
        """
        skips = self.backbone.encode(x)
        first_dropped = len(skips) - 1 - len(self.stage_dropouts)
        out, h = [], skips[-1]
        for k, skip in enumerate(reversed(skips[:-1])):
            h = self._stage(k, h, skip)
            if self.perturbation == "decoder_dropout" and k >= first_dropped:
                h = self.stage_dropouts[k - first_dropped](h)
            out.append(h)
        if self.is_3d and self.perturbation == "pyramid":
            out[-1] = self.backbone.feature_dropout(out[-1])
        return out

    def _stage(self, k: int, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Decoder stage k (0 = deepest) of the backbone: upsample ``h``, merge ``skip``, convolve."""
        net = self.backbone
        if self.is_3d:
            return net.decoder_stages[k](net.up_convs[k](h) + skip)
        return net.up_blocks[k](h, skip)

    def _perturb(self, level: int, h: torch.Tensor) -> torch.Tensor:
        """``pyramid`` perturbation of the auxiliary input at level 0 (1/8), 1 (1/4) or 2 (1/2), training only."""
        if not self.training or self.perturbation != "pyramid":
            return h
        if level == 0:
            if self.aux_dropout_mode == "element":
                return F.dropout(h, self.dropout_p, training=True)
            return (F.dropout3d if self.is_3d else F.dropout2d)(h, self.dropout_p, training=True)
        if level == 1:
            return feature_dropout(h, self.feature_drop_low, self.feature_drop_high)
        return feature_noise(h, self.noise)

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(self.backbone, x)
        features = self._decoder_features(x)
        size = x.shape[2:]
        aux = []
        for level, (head, h) in enumerate(zip(self.aux_heads, features[-4:-1])):  # 1/8, 1/4, 1/2
            logits = head(self._perturb(level, h))
            if self.upsample_mode == "nearest":
                logits = F.interpolate(logits, size=size, mode="nearest")
            else:
                logits = F.interpolate(logits, size=size, mode=self.upsample_mode, align_corners=False)
            aux.append(logits)
        full = self.backbone.out_conv(features[-1])
        return [full, aux[2], aux[1], aux[0]]
