"""SimAM, a parameter-free attention module. Yang et al., "SimAM: A Simple, Parameter-Free
Attention Module for Convolutional Neural Networks", ICML 2021 (PMLR 139: 11863-11874).

Per sample and channel, over the M = H*W positions:

    d = (x - mean(x))^2;  v = sum(d) / (M - 1);  E_inv = d / (4 (v + lambda)) + 1/2
    y = x * sigmoid(E_inv)

The variance is taken as mean(d) * M/(M-1), which equals sum(d)/(M-1) but never forms the
sum, whose value overflows float16 on large maps. A 1x1 map (M = 1) has d = 0 and gives
E_inv = 1/2 instead of the original's 0/0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import AttentionModule, ForkLayer, spatial_count
from .registry import register_attention


@register_attention("simam", aliases=("SimAM", "simam_module", "SimAMAttention"), yaml_args=("e_lambda",))
class SimAM(AttentionModule):
    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = float(e_lambda)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda:g}"

    def forward(self, x: Tensor) -> Tensor:
        d = (x - x.mean((2, 3), keepdim=True)).pow(2)
        m = spatial_count(x)
        v = d.mean((2, 3), keepdim=True) * (m / torch.clamp(m - 1.0, min=1.0))
        e_inv = d / (4.0 * (v + self.e_lambda)) + 0.5
        return x * torch.sigmoid(e_inv)

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        # YOLOAir passes the yaml's channel count as lambda (so 512, not 1e-4): read what was saved
        lam = layer.attrs.get("e_lambda")
        return {"e_lambda": float(lam)} if lam is not None else {}
