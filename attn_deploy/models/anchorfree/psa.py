"""Position-sensitive attention (YOLO11's C2PSA; YOLOv10 introduced the PSA block).

Multi-head self-attention over all H*W positions of a feature map, written with plain
matmul/softmax/reshape so the ONNX graph holds only standard ops (no fused attention op),
plus a depthwise 3x3 'positional encoding' on the values. Attribute names (``qkv``, ``proj``,
``pe``, ``attn``, ``ffn``, ``m``) are the checkpoint format of ultralytics' weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attn_deploy.models.common import Conv


class Attention(nn.Module):
    """Global multi-head self-attention with a narrower query/key than value.

    Each head owns a contiguous slice of the ``qkv`` output: ``key_dim`` query channels, then
    ``key_dim`` key channels, then ``head_dim`` value channels. Keys are ``attn_ratio`` times
    as wide as values, which saves compute where only the similarity needs them.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        per_head = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = per_head.split((self.key_dim, self.key_dim, self.head_dim), dim=2)
        weights = torch.matmul(q.transpose(-2, -1) * self.scale, k).softmax(dim=-1)  # (b, heads, N, N)
        out = torch.matmul(v, weights.transpose(-2, -1)).reshape(b, c, h, w)
        return self.proj(out + self.pe(v.reshape(b, c, h, w)))


class PSABlock(nn.Module):
    """Attention then a 2x-wide 1x1 feed-forward, each with a residual (a transformer layer)."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True) -> None:
        super().__init__()
        self.attn = Attention(c, num_heads=num_heads, attn_ratio=attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c, 1), Conv(2 * c, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """CSP split: half the channels pass through, half go through n PSA blocks (64 ch/head).

    Attention is quadratic in H*W, so YOLO11 and YOLO26 use this only after the stride-32 SPPF.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps its channel count: input {c1} != output {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        heads = max(self.c // 64, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=heads) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        keep, attend = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((keep, self.m(attend)), 1))
