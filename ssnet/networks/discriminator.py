"""SASSNet's discriminator on (signed-distance map, image) pairs (reference ``FC3DDiscriminator`` /
``FCDiscriminator``).

conv0(map) + conv1(image) (4x4(x4) stride-2 convs to ``ndf`` channels), then stride-2 convs to 2, 4
and 8 x ``ndf`` with LeakyReLU(0.2) and channel dropout between them, global average pooling and a
linear layer to 2 logits (labelled / unlabelled). In 3D the fused map+image features also get
LeakyReLU + dropout (reference 3D); the 2D reference skips that (``fused_activation=False``).
The reference pools with a fixed ``AvgPool3d((7, 7, 5))``, i.e. the global average of the 112x112x80
patch's 7x7x5 map; adaptive global pooling is the same there and works for any patch size.
"""

from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """``forward(map (B, K, *S), image (B, C, *S)) -> (B, 2)`` logits."""

    def __init__(self, dim: int, map_channels: int, image_channels: int = 1, ndf: int = 64,
                 dropout: float = 0.5, fused_activation: bool | None = None, negative_slope: float = 0.2):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dim]
        drop = {2: nn.Dropout2d, 3: nn.Dropout3d}[dim]
        pool = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dim]
        self.fused_activation = (dim == 3) if fused_activation is None else fused_activation
        self.conv0 = conv(map_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv1 = conv(image_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = conv(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = conv(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = conv(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.pool = pool(1)
        self.classifier = nn.Linear(ndf * 8, 2)
        self.act = nn.LeakyReLU(negative_slope)
        self.dropout = drop(dropout)

    def forward(self, sdm: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.conv0(sdm) + self.conv1(image)
        if self.fused_activation:
            x = self.dropout(self.act(x))
        x = self.dropout(self.act(self.conv2(x)))
        x = self.dropout(self.act(self.conv3(x)))
        x = self.act(self.conv4(x))
        return self.classifier(self.pool(x).flatten(1))
