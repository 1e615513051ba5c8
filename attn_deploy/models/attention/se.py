"""Squeeze-and-Excitation. Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507.

    z = GAP(x);  s = sigmoid(W2 relu(W1 z));  y = x * s

W1 is C/r x C and W2 is C x C/r, written as 1x1 convolutions on the (B, C, 1, 1) pooled map so
the export is two Conv nodes with no Shape/Gather chains. The paper counts 2C^2/r weights; the
Caffe release also has biases (``bias=True``); the YOLOv5 forks drop them, as we do by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1, reduction_from
from .registry import register_attention


@register_attention(
    "se", aliases=("SE", "SEAttention", "SELayer", "se_block", "SEBlock"), yaml_args=("reduction",)
)
class SqueezeExcite(AttentionModule):
    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = conv1x1(channels, hidden, bias=bias)
        self.act = nn.ReLU()
        self.fc2 = conv1x1(hidden, channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        z = x.mean((2, 3), keepdim=True)  # squeeze
        s = torch.sigmoid(self.fc2(self.act(self.fc1(z))))  # excitation
        return x * s

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = layer.weights()
        return {"reduction": reduction_from(channels, w[0][1].shape[0]), "bias": len(w) == 4}
