"""Inference-only fusion of convolution + BatchNorm + activation into one oneDNN convolution (CPU).

In eval mode BatchNorm is the affine map y = (z - mean) * s + beta with s = gamma / sqrt(var + eps), so
conv -> BN folds into one convolution with weight ``W * s`` (per output channel) and bias
``(b - mean) * s + beta``; the ReLU / LeakyReLU that follows runs as the convolution's post-op
(``torch.ops.mkldnn._convolution_pointwise``, the kernels PyTorch's compiler uses for the same fusion).
The maths is the same; the float rounding differs (the scale rounded into every weight, one pass instead of
three): about 1e-5 relative on the logits (2.2e-5 on the golden VNet's, which reach 2.5). Training is
untouched: the fused network is a copy used under ``torch.inference_mode`` by evaluation and validation
(``inference.fuse_batchnorm``).

Blocks declare their (conv, norm, activation) attribute triples in ``FUSABLE``; their ``forward`` must
apply the three in that order (:class:`ssnet.networks.vnet.ConvNormReLU`,
:class:`ssnet.networks.unet.DoubleConv`, :class:`ssnet.networks.mcnet.InterpolatingUp3d`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

ACTIVATIONS = {nn.ReLU: lambda act: ("relu", []), nn.LeakyReLU: lambda act: ("leaky_relu", [act.negative_slope])}


def fusion_available(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`fused_for_inference` can fuse a ``dtype`` network on ``device``: float32 on the CPU with
    PyTorch's oneDNN kernels."""
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and all(hasattr(torch.ops.mkldnn, op) for op in ("_convolution_pointwise",
                                                             "_convolution_transpose_pointwise")))


class FusedConvAct(nn.Module):
    """act(BN(conv(x))) of an eval-mode block as one oneDNN convolution; inference only (no autograd).

    The folded weight and bias are computed in float64 and stored in the conv's dtype and memory layout.
    """

    def __init__(self, conv: nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d,
                 norm: nn.modules.batchnorm._BatchNorm, act: nn.Module):
        super().__init__()
        if type(act) not in ACTIVATIONS:
            raise TypeError(f"cannot fuse activation {type(act).__name__}")
        if conv.padding_mode != "zeros" or norm.running_mean is None:
            raise TypeError("fusion needs zero padding and BatchNorm running statistics")
        self.attr, self.scalars = ACTIVATIONS[type(act)](act)
        self.transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
        if self.transposed and conv.groups != 1:
            raise TypeError("fusion of grouped transposed convolutions is not implemented")
        self.padding, self.stride, self.dilation = list(conv.padding), list(conv.stride), list(conv.dilation)
        self.output_padding, self.groups = list(conv.output_padding), conv.groups
        weight, bias = fold_batchnorm(conv, norm)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedConvAct is for inference: BatchNorm was folded with its running statistics")
        ops = torch.ops.mkldnn
        if self.transposed:
            return ops._convolution_transpose_pointwise(x, self.weight, self.bias, self.padding, self.output_padding,
                                                        self.stride, self.dilation, self.groups, self.attr,
                                                        self.scalars, "")
        return ops._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                          self.groups, self.attr, self.scalars, "")


def fold_batchnorm(conv: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(W * s, (b - mean) * s + beta) with s = gamma / sqrt(running_var + eps), per output channel.

    Output channels are dim 0 of a convolution's weight and dim 1 of a transposed convolution's."""
    weight = conv.weight.detach()
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale, shift = scale * norm.weight.detach().double(), shift * norm.weight.detach().double()
        shift = shift + norm.bias.detach().double()
    if conv.bias is not None:
        shift = shift + conv.bias.detach().double() * scale
    out_dim = 1 if isinstance(conv, nn.modules.conv._ConvTransposeNd) else 0
    shape = [1] * weight.dim()
    shape[out_dim] = -1
    folded = (weight.double() * scale.view(shape)).to(weight.dtype)  # element-wise: keeps the weight's strides
    return folded, shift.to(weight.dtype)


def fused_for_inference(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` with every ``FUSABLE`` (conv, norm, act) triple of its blocks
    replaced by one :class:`FusedConvAct` (the norm and act become ``nn.Identity``). ``network`` is left
    as it is. The copy is for inference on the CPU (:func:`fusion_available`)."""
    fused = copy.deepcopy(network).eval()
    for block in list(fused.modules()):
        for conv_name, norm_name, act_name in getattr(block, "FUSABLE", ()):
            conv, norm, act = (getattr(block, name) for name in (conv_name, norm_name, act_name))
            if isinstance(conv, FusedConvAct):  # a fused network fused again
                continue
            setattr(block, conv_name, FusedConvAct(conv, norm, act).eval())
            setattr(block, norm_name, nn.Identity())
            setattr(block, act_name, nn.Identity())
    return fused


def network_for_inference(network: nn.Module, inference: dict, device: torch.device) -> nn.Module:
    """What evaluation and validation predict with: the fused copy of ``network`` where the inference
    settings ask for it (``fuse_batchnorm``: the config's default is true; absent, e.g. in the saved
    config of a run from before the key existed, means false) and device and dtype allow it, else ``network``."""
    dtype = next(network.parameters()).dtype
    if inference.get("fuse_batchnorm", False) and fusion_available(torch.device(device), dtype):
        return fused_for_inference(network)
    return network
