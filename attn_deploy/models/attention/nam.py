"""Normalization-based Attention Module (channel branch). Liu et al., "NAM: Normalization-based
Attention Module", arXiv 2111.12419.

    b = BN(x);  w_c = |gamma_c| / sum_j |gamma_j|;  y = x * sigmoid(w * b)

The BatchNorm scale factors gamma say how much each channel varies, and so weigh it. The
weights are read from the parameters inside forward (no ``.data``, which breaks torch.export);
in eval the exporter folds them into constants. The paper's pixel branch was dropped by its
authors' code and by every fork; so is it here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import AttentionModule
from .registry import register_attention


@register_attention("nam", aliases=("NAMAttention", "NAM", "Channel_Att", "Att"))
class NAMAttention(AttentionModule):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        gamma = self.bn.weight.abs()
        w = (gamma / gamma.sum()).reshape(1, -1, 1, 1)
        return x * torch.sigmoid(self.bn(x) * w)
