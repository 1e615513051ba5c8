"""Selective Kernel attention. Li et al., "Selective Kernel Networks", CVPR 2019, arXiv 1903.06586.

    Split:  U_m = ReLU(BN(conv_m(x))) for M branches of growing receptive field
    Fuse:   s = GAP(sum_m U_m);  z = ReLU(BN(W_fc s)),  d = max(C / r, L)
    Select: a = softmax over m of W_m z (per channel);  y = sum_m a_m * U_m

Defaults are the paper's: M = 2 branches, both 3x3 group convolutions (G = 32), the second
dilated by 2 (a 5x5 field); r = 16, L = 32. The YOLO forks (External-Attention's
``SKAttention``) use four ungrouped k x k branches (1, 3, 5, 7) with biases and a plain linear
fuse: ``kernels=(1, 3, 5, 7), dilations=(1, 1, 1, 1), groups=1, bias=True, fuse_norm=False``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1
from .registry import register_attention


def _branch(channels: int, k: int, dilation: int, groups: int, bias: bool) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    conv = nn.Conv2d(channels, channels, k, padding=pad, dilation=dilation, groups=groups, bias=bias)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(channels), relu=nn.ReLU()))


@register_attention(
    "sk", aliases=("SKAttention", "SKConv", "SKLayer", "SK"), yaml_args=("reduction",),
    alias_args={"SKAttention": ("kernels", "reduction", "groups", "min_dim")},
)
class SelectiveKernel(AttentionModule):
    def __init__(
        self, channels: int, kernels: tuple[int, ...] = (3, 3), dilations: tuple[int, ...] = (1, 2),
        reduction: int = 16, groups: int = 32, min_dim: int = 32, bias: bool = False,
        fuse_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(dilations) != len(kernels):
            dilations = (1,) * len(kernels)
        d = max(channels // reduction, min_dim)
        self.convs = nn.ModuleList(
            _branch(channels, k, dil, groups, bias) for k, dil in zip(kernels, dilations)
        )
        self.fc = conv1x1(channels, d, bias=not fuse_norm)
        self.fuse = nn.Sequential(nn.BatchNorm2d(d), nn.ReLU()) if fuse_norm else nn.Identity()
        self.fcs = nn.ModuleList(conv1x1(d, channels, bias=not fuse_norm) for _ in kernels)

    def forward(self, x: Tensor) -> Tensor:
        u = torch.stack([branch(x) for branch in self.convs], 1)  # (B, M, C, H, W)
        z = self.fuse(self.fc(u.sum(1).mean((2, 3), keepdim=True)))  # (B, d, 1, 1)
        logits = torch.stack([fc(z) for fc in self.fcs], 1)  # (B, M, C, 1, 1)
        return (torch.softmax(logits, 1) * u).sum(1)

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        convs = [t for k, t in layer.tensors.items() if k.startswith("convs.") and k.endswith("conv.weight")]
        fc = layer.shape("fc.weight")
        if not convs or fc is None:
            return {}
        fuse_norm = not layer.has("fc.bias")
        kernels = tuple(t.shape[-1] for t in convs)
        saved = [layer.attrs.get(f"convs.{i}.conv.dilation") for i in range(len(convs))]
        if all(s is not None for s in saved):
            dilations = tuple(int(s[0]) for s in saved)
        else:  # a plain state dict: the paper's pair of 3x3 convs is dilated 1 and 2
            dilations = (1, 2) if kernels == (3, 3) else (1,) * len(kernels)
        return {
            "kernels": kernels,
            "dilations": dilations,
            "groups": channels // convs[0].shape[1],
            "bias": layer.has("convs.0.conv.bias"),
            "fuse_norm": fuse_norm,
            "reduction": channels,  # with min_dim, pins the fuse width to what was saved
            "min_dim": fc[0],
        }
