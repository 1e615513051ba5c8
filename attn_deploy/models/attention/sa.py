"""Shuffle Attention. Zhang and Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural
Networks", ICASSP 2021, arXiv 2102.00240.

The channels form G groups; each group's first half is gated by its pooled mean
(sigmoid(cw * GAP + cb)), its second half by its instance-normalised map
(sigmoid(sw * GN(x) + sb)); the four (C/2G) parameter vectors are shared by all groups. A
two-group channel shuffle then mixes the halves.

Written on the (B, C, H, W) layout rather than the paper's (B*G, C/G, H, W) one: the shared
parameters are spread over the channels they apply to, both gates are one expression per
channel, and the shuffle is a constant-index gather. Same numbers, no batch folding, no 5-D
reshapes, and every reshape stays valid for dynamic H and W.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer
from .registry import register_attention


@register_attention(
    "sa", aliases=("ShuffleAttention", "sa_layer", "SALayer"), yaml_args=("groups",),
    alias_args={"ShuffleAttention": (None, "groups")},  # YOLOAir: (channel, reduction, G)
)
class ShuffleAttention(AttentionModule):
    def __init__(self, channels: int, groups: int = 64, eps: float = 1e-5) -> None:
        super().__init__()
        if channels % (2 * groups):
            raise ValueError(f"Shuffle Attention needs channels divisible by 2*groups, got {channels}, {groups}")
        half = channels // (2 * groups)
        self.groups = groups
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half, eps=eps)
        # output channel o of the 2-group shuffle takes input channel (o % 2) * C/2 + o // 2
        o = torch.arange(channels)
        self.register_buffer("shuffle", (o % 2) * (channels // 2) + o // 2, persistent=False)

    def _per_channel(self, channel_part: Tensor, spatial_part: Tensor) -> Tensor:
        """A (1, C, 1, 1) vector: ``channel_part`` on each group's first half, the other on its second."""
        pair = torch.cat((channel_part.reshape(-1), spatial_part.reshape(-1)))
        return pair.repeat(self.groups).reshape(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        zero = torch.zeros_like(self.cweight)
        mean = x.mean((2, 3), keepdim=True)
        var = (x - mean).pow(2).mean((2, 3), keepdim=True)
        normed = (x - mean) / torch.sqrt(var + self.gn.eps)
        sw = self.sweight.reshape(-1)
        a = self._per_channel(self.cweight, zero)  # weight of the pooled mean
        s = self._per_channel(zero, sw * self.gn.weight)  # weight of the normalised map
        b = self._per_channel(self.cbias, sw * self.gn.bias + self.sbias.reshape(-1))
        y = x * torch.sigmoid(a * mean + s * normed + b)
        return y.index_select(1, self.shuffle)

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        half = layer.weights()[0][1].numel()
        return {"groups": channels // (2 * half)}
