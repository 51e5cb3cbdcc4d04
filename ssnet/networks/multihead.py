"""Segmentation + signed-distance heads (SASSNet, DTC) on a VNet/UNet, and the signed-distance target.

Both heads read the last decoder features (after the VNet's feature dropout in training): the
segmentation head is the backbone's own output conv, the SDM head a conv of the same kernel size
followed by tanh. With ``binary_sigmoid`` (the LA reference: ``VNet(n_classes=num_classes - 1)``)
both heads have one channel and the segmentation is a sigmoid; ``forward`` then returns the class
logits ``[0, z]``, whose softmax is ``[1 - sigmoid(z), sigmoid(z)]``, so the shared inference code
(softmax, argmax / threshold 0.5) gives the reference's ``sigmoid(z) > 0.5`` prediction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .unet import UNet
from .vnet import DOWNSAMPLING_FACTOR, VNet, _check_spatial


def build_backbone(arch: str, **kwargs) -> nn.Module:
    """A VNet or UNet (the architectures whose ``encode``/``decode`` the baseline networks reuse)."""
    key = arch.lower()
    if key == "vnet":
        return VNet(**kwargs)
    if key == "unet":
        return UNet(**kwargs)
    raise ValueError(f"unknown network {arch!r}; valid choices: vnet, unet")


def check_input(backbone: nn.Module, x: torch.Tensor) -> None:
    """The backbone's own input check (spatial dims and divisibility)."""
    if isinstance(backbone, VNet):
        _check_spatial(x, spatial_dims=3, factor=DOWNSAMPLING_FACTOR)
    else:
        _check_spatial(x, spatial_dims=2, factor=2 ** (len(backbone.channels) - 1))


class DualHeadNet(nn.Module):
    """``heads(x) -> (seg_logits, sdm, features)``; ``forward(x) -> (class_logits, features)``.

    seg_logits / sdm: (B, K, *S) with K = 1 (``binary_sigmoid``) or n_classes; sdm = tanh(conv(features)).
    """

    def __init__(self, arch: str = "vnet", in_channels: int = 1, n_classes: int = 2,
                 binary_sigmoid: bool = False, **network_kwargs):
        super().__init__()
        if binary_sigmoid and n_classes != 2:
            raise ValueError(f"binary_sigmoid needs 2 classes, got {n_classes}")
        self.binary_sigmoid = binary_sigmoid
        self.n_classes = n_classes
        self.head_channels = 1 if binary_sigmoid else n_classes
        self.backbone = build_backbone(arch, in_channels=in_channels, n_classes=self.head_channels,
                                       **network_kwargs)
        out = self.backbone.out_conv
        self.sdm_conv = type(out)(out.in_channels, self.head_channels, kernel_size=out.kernel_size,
                                  padding=out.padding)
        self.feature_channels = self.backbone.feature_channels

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(self.backbone, x)
        features = self.backbone.decode(self.backbone.encode(x))
        return self.backbone.out_conv(features), torch.tanh(self.sdm_conv(features)), features

    def class_logits(self, seg_logits: torch.Tensor) -> torch.Tensor:
        """(B, n_classes, *S) logits: ``[0, z]`` for the sigmoid head, the logits themselves otherwise."""
        if self.binary_sigmoid:
            return torch.cat([torch.zeros_like(seg_logits), seg_logits], dim=1)
        return seg_logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg, _, features = self.heads(x)
        return self.class_logits(seg), features


def signed_distance_map(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Normalised signed distance maps of ``labels == c`` for each c in ``classes``.

    labels: (B, *S) integer array; returns float32 (B, len(classes), *S). For a sample where the class
    and its complement are both present: ``d_out / max(d_out) - d_in / max(d_in)`` with d_out the
    Euclidean distance of outside voxels to the class and d_in of inside voxels to the outside
    (``scipy.ndimage.distance_transform_edt``), so values lie in [-1, 1], negative inside, positive
    outside, and 0 on the inner boundary (class voxels with a face-neighbour outside the class; the
    image border is not a boundary, as ``skimage.segmentation.find_boundaries(mode='inner')``).
    A sample where the class is absent (or fills the whole patch) gets 0 everywhere (reference
    ``compute_sdf_multi``; the reference 3D ``compute_sdf`` would produce NaN for a full patch).
    """
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], len(classes)) + labels.shape[1:], dtype=np.float32)
    structure = ndimage.generate_binary_structure(labels.ndim - 1, 1)
    for b in range(labels.shape[0]):
        for k, c in enumerate(classes):
            inside = labels[b] == c
            if not inside.any() or inside.all():
                continue
            d_in = ndimage.distance_transform_edt(inside)
            d_out = ndimage.distance_transform_edt(~inside)
            sdm = d_out / d_out.max() - d_in / d_in.max()
            boundary = inside & ~ndimage.binary_erosion(inside, structure=structure, border_value=1)
            sdm[boundary] = 0.0
            out[b, k] = sdm
    return out
