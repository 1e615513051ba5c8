"""Area attention and R-ELAN (YOLO12: "YOLOv12: Attention-Centric Real-Time Object Detectors",
arXiv:2502.12524).

Area attention cuts the feature map into ``area`` horizontal strips of the row-major H*W
sequence and attends within each strip: 1/area of global attention's cost with most of its
receptive field. Plain matmul/softmax/reshape only (no flash attention, no fused op), so it
exports; H*W must be divisible by ``area`` (true for YOLO12's area 4 at stride 16 whenever the
input side is a multiple of 32). Attribute names are the checkpoint format of ultralytics'.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attn_deploy.models.anchorfree.blocks import C3k
from attn_deploy.models.common import Conv


class AAttn(nn.Module):
    """Multi-head self-attention within ``area`` strips, plus a 7x7 depthwise conv on the values.

    Each head owns ``3 * head_dim`` consecutive ``qkv`` channels: its query, key and value.
    """

    def __init__(self, dim: int, num_heads: int, area: int = 1) -> None:
        super().__init__()
        self.area = area
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.all_head_dim = self.head_dim * num_heads
        self.qkv = Conv(dim, 3 * self.all_head_dim, 1, act=False)
        self.proj = Conv(self.all_head_dim, dim, 1, act=False)
        self.pe = Conv(self.all_head_dim, self.all_head_dim, 7, 1, 3, g=self.all_head_dim, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        d, area = self.head_dim, max(self.area, 1)
        seq = self.qkv(x).flatten(2).transpose(1, 2)  # (b, N, 3c), row-major positions
        strips = seq.reshape(b * area, (h * w) // area, self.num_heads, 3 * d).permute(0, 2, 3, 1)
        q, k, v = strips.split((d, d, d), dim=2)  # (b*area, heads, d, N/area)
        weights = torch.matmul(q.transpose(-2, -1) * d ** -0.5, k).softmax(dim=-1)
        out = torch.matmul(v, weights.transpose(-2, -1))
        out = self._to_map(out, b, h, w)
        return self.proj(out + self.pe(self._to_map(v, b, h, w)))

    def _to_map(self, t: Tensor, b: int, h: int, w: int) -> Tensor:
        """(b*area, heads, d, N/area) back to a (b, c, h, w) map, strips in row-major order."""
        return t.permute(0, 3, 1, 2).reshape(b, h, w, self.all_head_dim).permute(0, 3, 1, 2)


class ABlock(nn.Module):
    """Area attention and a 1x1 MLP (``mlp_ratio`` wide), each with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 1.2, area: int = 1) -> None:
        super().__init__()
        self.attn = AAttn(dim, num_heads=num_heads, area=area)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1), Conv(hidden, dim, 1, act=False))
        for m in self.modules():  # the transformer habit the paper trains with
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class A2C2f(nn.Module):
    """R-ELAN: a 1x1 transition, n stages (two ABlocks each when ``a2``, else a C3k), all stage
    outputs concatenated and fused; with ``a2`` and ``residual`` the block output is added to
    its input scaled by a learnt per-channel ``gamma`` (0.01 at start) that steadies training
    of the large scales."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, a2: bool = True, area: int = 1, residual: bool = False,
        mlp_ratio: float = 2.0, e: float = 0.5, g: int = 1, shortcut: bool = True,
    ) -> None:
        super().__init__()
        hidden = int(c2 * e)
        if hidden % 32:
            raise ValueError(f"A2C2f hidden width {hidden} must be a multiple of 32 (32 channels per head)")
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv((1 + n) * hidden, c2, 1)
        self.gamma = nn.Parameter(torch.full((c2,), 0.01)) if a2 and residual else None

        def stage() -> nn.Module:
            if a2:
                return nn.Sequential(*(ABlock(hidden, hidden // 32, mlp_ratio, area) for _ in range(2)))
            return C3k(hidden, hidden, 2, shortcut, g)

        self.m = nn.ModuleList(stage() for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        ys = [self.cv1(x)]
        for stage in self.m:
            ys.append(stage(ys[-1]))
        y = self.cv2(torch.cat(ys, 1))
        return x + self.gamma.view(1, -1, 1, 1) * y if self.gamma is not None else y
