"""Coordinate Attention. Hou, Zhou and Feng, "Coordinate Attention for Efficient Mobile Network
Design", CVPR 2021, arXiv 2103.02907.

    z_h = mean_W(x) (B,C,H,1);  z_w = mean_H(x) (B,C,1,W)
    f = h_swish(BN(conv1([z_h; z_w^T])))  with mip = max(8, C // reduction) channels
    g_h = sigmoid(conv_h(f_h));  g_w = sigmoid(conv_w(f_w^T));  y = x * g_h * g_w

The directional pools are means over one axis, not ``AdaptiveAvgPool2d((None, 1))``: the
adaptive form fails the legacy ONNX export with dynamic H/W and is silently wrong at other
sizes under the dynamo exporter. Attribute names follow the official ``coordatt.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, HardSwish, conv1x1
from .registry import register_attention


@register_attention(
    "ca", aliases=("CA", "CoordAtt", "CoordAttention", "CoordinateAttention"),
    yaml_args=("reduction",),
)
class CoordinateAttention(AttentionModule):
    def __init__(
        self, channels: int, reduction: int = 32, min_mip: int = 8, bias: bool = True
    ) -> None:
        super().__init__()
        mip = max(min_mip, channels // reduction)
        self.conv1 = conv1x1(channels, mip, bias=bias)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HardSwish()
        self.conv_h = conv1x1(mip, channels, bias=bias)
        self.conv_w = conv1x1(mip, channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        z_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
        z_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        f = self.act(self.bn1(self.conv1(torch.cat((z_h, z_w), 2))))
        g_h = torch.sigmoid(self.conv_h(f[:, :, :h]))
        g_w = torch.sigmoid(self.conv_w(f[:, :, h:].transpose(2, 3)))
        return x * g_h * g_w

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = layer.weights()
        mip = w[0][1].shape[0]
        kwargs: dict[str, Any] = {"bias": sum(t.dim() == 1 for _, t in w) > 2}
        if mip != max(8, channels // 32):  # a fork with other sizing: pin mip exactly
            kwargs.update(reduction=channels, min_mip=mip)
        return kwargs
