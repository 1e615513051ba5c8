"""S2-MLPv2 spatial-shift attention. Yu et al., "S2-MLPv2: Improved Spatial-Shift MLP
Architecture for Vision", arXiv 2108.01072.

    t = W1 x (C -> 3C);  X1 = shift1(t[:C]);  X2 = shift2(t[C:2C]);  X3 = t[2C:]
    a = sum_k sum_positions X_k;  w = softmax_k(W_b GELU(W_a a));  y = W2 (sum_k w_k X_k)

shift1 moves the channel quarters +1 along H, -1 along H, +1 along W, -1 along W (the edge
row or column keeps its value); shift2 does W first, then H. The module is the core the
YOLO forks call ``S2Attention`` (no LayerNorm, residual or channel MLP around it).

Two deliberate departures from that code: the shift is the clean shift the paper's
pseudo-code means (the forks' overlapping in-place slice assignment smears the +1 directions
in eager PyTorch, while their own ONNX export computes the clean shift), and the split
attention is sized for ``channels`` (theirs is fixed at 512 and runs only at C = 512, where
the two agree). The linear layers are 1x1 convolutions on (B, C, H, W): the same weights,
no layout permutes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import AttentionModule, conv1x1
from .registry import register_attention


def _shift(x: Tensor, dim: int, step: int) -> Tensor:
    """Move x by one along ``dim`` (+1: index i takes i-1); the edge keeps its own value."""
    n = x.shape[dim]
    if step > 0:
        return torch.cat((x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)), dim)
    return torch.cat((x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)), dim)


def spatial_shift(x: Tensor, h_first: bool) -> Tensor:
    """Shift the four channel quarters of (B, C, H, W): +H, -H, +W, -W (or W first)."""
    c = x.shape[1]
    bounds = (0, c // 4, c // 2, c * 3 // 4, c)
    dims = (2, 2, 3, 3) if h_first else (3, 3, 2, 2)
    parts = [
        _shift(x[:, lo:hi], d, step)
        for lo, hi, d, step in zip(bounds[:-1], bounds[1:], dims, (1, -1, 1, -1))
    ]
    return torch.cat(parts, 1)


class SplitAttention(nn.Module):
    def __init__(self, channels: int, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.mlp1 = conv1x1(channels, channels, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = conv1x1(channels, channels * k, bias=False)

    def forward(self, parts: Tensor) -> Tensor:
        """(B, K, C, H, W) -> (B, C, H, W)."""
        a = parts.sum((1, 3, 4)).unsqueeze(-1).unsqueeze(-1)  # (B, C, 1, 1)
        logits = self.mlp2(self.gelu(self.mlp1(a)))  # (B, K*C, 1, 1)
        w = torch.softmax(logits.reshape(logits.shape[0], self.k, -1, 1, 1), 1)
        return (w * parts).sum(1)


@register_attention("s2mlp", aliases=("S2Attention", "S2MLPv2", "S2Attn"))
class S2Attention(AttentionModule):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp1 = conv1x1(channels, channels * 3)
        self.mlp2 = conv1x1(channels, channels)
        self.split_attention = SplitAttention(channels)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        t = self.mlp1(x)
        x1 = spatial_shift(t[:, :c], h_first=True)
        x2 = spatial_shift(t[:, c:2 * c], h_first=False)
        parts = torch.stack((x1, x2, t[:, 2 * c:]), 1)
        return self.mlp2(self.split_attention(parts))
