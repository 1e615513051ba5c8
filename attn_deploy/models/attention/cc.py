"""Criss-Cross Attention. Huang et al., "CCNet: Criss-Cross Attention for Semantic
Segmentation", ICCV 2019, arXiv 1811.11721.

Each position (i, j) attends to its column and its row: energies <q(i,j), k(i',j)> for all i'
except i itself, and <q(i,j), k(i,j')> for all j'; one softmax over those H+W-1 entries
weights v along the same cross; y = gamma * out + x (gamma starts at 0). One pass (R = 1), as
the YOLO forks use it.

The self term of the column energies is masked with -1e4 on the diagonal rather than -inf:
the result is the same in float32 and it stays finite in float16. The diagonal comes from
comparing two ranges (Range/Equal in ONNX), not from ``diag`` (no legacy export) or ``eye``
(EyeLike, which TensorRT accepts only for static shapes). Everything else is batched MatMul.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1, reduction_from
from .registry import register_attention

MASK = -1e4


@register_attention(
    "cc", aliases=("CrissCrossAttention", "CCAttention", "CC_module", "RCCAModule"),
    yaml_args=("reduction",),
)
class CrissCrossAttention(AttentionModule):
    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.query_conv = conv1x1(channels, max(channels // reduction, 1))
        self.key_conv = conv1x1(channels, max(channels // reduction, 1))
        self.value_conv = conv1x1(channels, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        # column energies (B, W, H, H'), self term masked; row energies (B, H, W, W')
        i = torch.arange(h, device=x.device)
        mask = (i.unsqueeze(1) == i.unsqueeze(0)).to(x.dtype) * MASK
        e_col = torch.matmul(q.permute(0, 3, 2, 1), k.permute(0, 3, 1, 2)) + mask
        e_row = torch.matmul(q.permute(0, 2, 3, 1), k.permute(0, 2, 1, 3))
        a = torch.softmax(torch.cat((e_col.permute(0, 2, 1, 3), e_row), 3), 3)  # (B, H, W, H+W)
        a_col, a_row = a[..., :h], a[..., h:]
        out_col = torch.matmul(a_col.permute(0, 2, 1, 3), v.permute(0, 3, 2, 1))  # (B, W, H, C)
        out_row = torch.matmul(a_row, v.permute(0, 2, 3, 1))  # (B, H, W, C)
        out = out_col.permute(0, 3, 2, 1) + out_row.permute(0, 3, 1, 2)
        return self.gamma * out + x

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        q = next((t for k, t in layer.weights() if t.dim() >= 2), None)
        return {"reduction": reduction_from(channels, q.shape[0])} if q is not None else {}
