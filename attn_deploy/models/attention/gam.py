"""Global Attention Mechanism. Liu, Shao and Hoffmann, "Global Attention Mechanism: Retain
Information to Enhance Channel-Spatial Interactions", arXiv 2112.05561.

    Channel: M_c = sigmoid(MLP(x)) applied per pixel (C -> C/r -> C);  x' = x * M_c
    Spatial: M_s = sigmoid(BN(conv7x7(ReLU(BN(conv7x7(x'))))))  (C -> C/r -> C);  y = x' * M_s

No pooling anywhere: that is the point of the paper. Defaults are the paper's main form
(r = 4, plain convolutions, sigmoid on both gates). The paper's lighter form for large C,
group convolutions followed by a channel shuffle, is ``groups=4``. YOLOAir's
``GAMAttention`` is that grouped form without the channel sigmoid
(``groups=4, channel_sigmoid=False``). The per-pixel MLP is two 1x1 convolutions (the same
weights as the Linear layers on the permuted tensor) and the shuffle a constant-index gather.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1
from .registry import register_attention


@register_attention(
    "gam", aliases=("GAMAttention", "GAM_Attention", "GAM"), yaml_args=("rate",),
    alias_args={"GAMAttention": (None, "rate")},  # YOLOAir: (c1, c2, group, rate)
)
class GlobalAttention(AttentionModule):
    def __init__(
        self, channels: int, rate: int = 4, groups: int = 1, channel_sigmoid: bool = True
    ) -> None:
        super().__init__()
        hidden = channels // rate
        self.channel_sigmoid = channel_sigmoid
        self.channel_attention = nn.Sequential(
            conv1x1(channels, hidden), nn.ReLU(), conv1x1(hidden, channels)
        )
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, 7, padding=3, groups=groups),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 7, padding=3, groups=groups),
            nn.BatchNorm2d(channels),
        )
        # a grouped form shuffles the gate's channels: o takes (o % g) * C/g + o // g
        o = torch.arange(channels)
        shuffle = (o % groups) * (channels // groups) + o // groups
        self.register_buffer("shuffle", shuffle if groups > 1 else None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        m_c = self.channel_attention(x)
        x = x * (torch.sigmoid(m_c) if self.channel_sigmoid else m_c)
        m_s = torch.sigmoid(self.spatial_attention(x))
        if self.shuffle is not None:
            m_s = m_s.index_select(1, self.shuffle)
        return x * m_s

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = dict(layer.weights())
        hidden = w["channel_attention.0.weight"].shape[0] if "channel_attention.0.weight" in w else None
        conv = w.get("spatial_attention.0.weight")
        kwargs: dict[str, Any] = {"channel_sigmoid": layer.cls != "GAMAttention"}
        if hidden:
            kwargs["rate"] = channels // hidden
        if conv is not None:
            kwargs["groups"] = channels // conv.shape[1]
        return kwargs
