"""Convolutional Block Attention Module. Woo et al., "CBAM: Convolutional Block Attention
Module", ECCV 2018, arXiv 1807.06521.

    M_c = sigmoid(MLP(GAP(x)) + MLP(GMP(x)));  x' = x * M_c
    M_s = sigmoid(BN(conv7x7([max_c(x'); mean_c(x')])));  y = x' * M_s

Defaults follow the official code (MLP with bias and ReLU; a bias-free 7x7 conv with BN; the
planes stacked max first). The forks differ in exactly these choices, so each is a keyword:
YOLOAir's ``CBAM`` uses LeakyReLU(0.1), a biased conv without BN and [mean; max]; the
tutorials' ``CBAM`` is bias-free throughout; External-Attention's ``CBAMBlock`` adds x back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1, reduction_from
from .registry import register_attention


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int, bias: bool, negative_slope: float) -> None:
        super().__init__()
        self.fc1 = conv1x1(channels, max(channels // reduction, 1), bias=bias)
        self.act = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
        self.fc2 = conv1x1(max(channels // reduction, 1), channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return torch.sigmoid(avg + mx)


class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int, bias: bool, norm: bool, max_first: bool) -> None:
        super().__init__()
        self.max_first = max_first
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        mx, avg = x.amax(1, keepdim=True), x.mean(1, keepdim=True)
        planes = (mx, avg) if self.max_first else (avg, mx)
        return torch.sigmoid(self.bn(self.conv(torch.cat(planes, 1))))


@register_attention(
    "cbam", aliases=("CBAM", "CBAMBlock", "cbam_block"), yaml_args=("reduction", "kernel_size")
)
class CBAM(AttentionModule):
    def __init__(
        self, channels: int, reduction: int = 16, kernel_size: int = 7, bias: bool = True,
        negative_slope: float = 0.0, spatial_bias: bool = False, spatial_norm: bool = True,
        max_first: bool = True, residual: bool = False,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.channel = ChannelGate(channels, reduction, bias, negative_slope)
        self.spatial = SpatialGate(kernel_size, spatial_bias, spatial_norm, max_first)

    def forward(self, x: Tensor) -> Tensor:
        y = x * self.channel(x)
        y = y * self.spatial(y)
        return x + y if self.residual else y

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = layer.weights()
        conv_i = next(i for i, (_, t) in enumerate(w) if t.dim() == 4 and t.shape[:2] == (1, 2))
        after = len(w) - conv_i - 1  # conv bias (1) and/or BN affine (2) after the 7x7 conv
        yoloair = layer.has("channel_attention.shared_MLP")
        slope = next((v for k, v in layer.attrs.items() if k.endswith("negative_slope")), None)
        return {
            "reduction": reduction_from(channels, w[0][1].shape[0]),
            "kernel_size": w[conv_i][1].shape[-1],
            "bias": conv_i == 4,
            "negative_slope": float(slope if slope is not None else 0.1 if yoloair else 0.0),
            "spatial_bias": after % 2 == 1,
            "spatial_norm": after >= 2,
            # official and External-Attention stack [max; mean], YOLOAir and the tutorials [mean; max]
            "max_first": not (yoloair or layer.has("channel_attention.f1")),
            "residual": layer.cls == "CBAMBlock" or layer.has("ca.se"),
        }
