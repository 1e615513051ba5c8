"""Efficient Channel Attention. Wang et al., "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020, arXiv 1910.03151.

    z = GAP(x) as a length-C sequence;  y = x * sigmoid(conv1d_k(z))

k = psi(C) = |log2(C)/gamma + b/gamma| taken to the nearest odd number above (gamma=2, b=1),
the paper's adaptive rule; pass ``kernel_size`` to fix it (the forks' default is 3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer
from .registry import register_attention


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's adaptive kernel size psi(C), made odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register_attention(
    "eca",
    aliases=("ECA", "ECAAttention", "eca_layer", "eca_block", "ECALayer"),
    yaml_args=("kernel_size",),
)
class EfficientChannelAttention(AttentionModule):
    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        if k % 2 == 0:
            raise ValueError(f"ECA kernel_size must be odd, got {k}")
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        z = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C): the channels as a sequence
        a = torch.sigmoid(self.conv(z))  # local cross-channel interaction
        return x * a.transpose(1, 2).unsqueeze(-1)

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = layer.weights()
        return {"kernel_size": w[0][1].shape[-1], "bias": len(w) == 2}
