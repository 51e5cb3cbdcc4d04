"""SS-Net heads on per-pixel features flattened to (N, C): projection, prediction, selectors."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """Linear(C_in, hidden) + BatchNorm1d + activation + Linear(hidden, C_out): (N, C_in) -> (N, C_out).

    ``act`` may work in place: it only ever sees the BatchNorm output."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, act: nn.Module):
        super().__init__()
        self.fc_in = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.BatchNorm1d(hidden_dim)
        self.act = act
        self.fc_out = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.norm(self.fc_in(x))))


def _selector(feat_dim: int) -> MLPHead:
    """Per-class score head: (N, feat_dim) -> (N, 1) raw logit."""
    return MLPHead(feat_dim, feat_dim, 1, nn.LeakyReLU(0.2, inplace=True))


class SSNetHeads(nn.Module):
    """Projection (dim_in -> feat_dim), prediction (feat_dim -> feat_dim) and, per class c, a selector
    and a memory selector (feat_dim -> 1). All take flattened per-pixel features (N, C)."""

    def __init__(self, n_classes: int, dim_in: int = 16, feat_dim: int = 32):
        super().__init__()
        self.n_classes = n_classes
        self.dim_in = dim_in
        self.feat_dim = feat_dim
        self.projection_head = MLPHead(dim_in, feat_dim, feat_dim, nn.ReLU(inplace=True))
        self.prediction_head = MLPHead(feat_dim, feat_dim, feat_dim, nn.ReLU(inplace=True))
        self.selectors = nn.ModuleList(_selector(feat_dim) for _ in range(n_classes))
        self.memory_selectors = nn.ModuleList(_selector(feat_dim) for _ in range(n_classes))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(N, dim_in) -> (N, feat_dim)."""
        return self.projection_head(features)

    def predict(self, projected: torch.Tensor) -> torch.Tensor:
        """(N, feat_dim) -> (N, feat_dim)."""
        return self.prediction_head(projected)

    def selector(self, class_index: int) -> MLPHead:
        """Class ``class_index``'s selector module: (N, feat_dim) -> (N, 1)."""
        return self.selectors[class_index]

    def memory_selector(self, class_index: int) -> MLPHead:
        """Class ``class_index``'s memory selector module: (N, feat_dim) -> (N, 1)."""
        return self.memory_selectors[class_index]
