"""Block file for Mixed Local Channel Attention, ported with ``attn_deploy.ops``.

MLCA (Wan et al., "Mixed Local Channel Attention for Object Detection", Engineering
Applications of Artificial Intelligence 123, 2023): ECA's 1-D convolution across channels,
applied twice, to the global average (one value per channel) and to a k x k local average
(k = 5: each cell's channels in turn); both gates are mixed on the k x k grid, then spread
back over the whole H x W map and multiplied in.

The forks write both poolings with ``nn.AdaptiveAvgPool2d`` and spread the gates back with
``F.adaptive_avg_pool2d(att, [H, W])``: pooling *up* from 5 x 5, which the ONNX exporter
refuses ("output size that are not factor of input size"), and which no fixed kernel can
replace, since H and W are rarely multiples of 5. ``attn_deploy.ops.adaptive_avg_pool2d``
computes exactly what PyTorch computes, for any ratio, up or down, with H and W dynamic. The
attribute names are the forks' (``conv``, ``conv_local``), so their checkpoints map by name.

    attn-deploy blocks examples/blocks/mlca.py
    attn-deploy export --weights best.pt --blocks examples/blocks/mlca.py
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attn_deploy import ops
from attn_deploy.blocks import block


def eca_kernel(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's kernel size for ``channels``: |log2(C) + b| / gamma, made odd."""
    t = int(abs(math.log(channels, 2) + b) / gamma)
    return t if t % 2 else t + 1


@block("MLCA", "models.common.MLCA", rule="attention", example=[64], example_channels=64)
class MLCA(nn.Module):
    """(channels, local_size=5, gamma=2, b=1, local_weight=0.5), as the forks' rows give them."""

    def __init__(self, channels: int, local_size: int = 5, gamma: int = 2, b: int = 1,
                 local_weight: float = 0.5) -> None:
        super().__init__()
        k = eca_kernel(channels, gamma, b)
        self.local_size, self.local_weight = local_size, local_weight
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.conv_local = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        s = self.local_size
        local = ops.adaptive_avg_pool2d(x, s)  # (B, C, s, s)
        pooled = local.mean((2, 3), keepdim=True)  # the global average of the local one, as the forks take it
        seq_local = local.reshape(b, c, s * s).transpose(1, 2).reshape(b, 1, s * s * c)  # cell by cell, channels
        seq_global = pooled.reshape(b, 1, c)
        gate_local = self.conv_local(seq_local).reshape(b, s * s, c).transpose(1, 2).reshape(b, c, s, s).sigmoid()
        gate_global = self.conv(seq_global).reshape(b, c, 1, 1).sigmoid().expand(b, c, s, s)  # 1x1 -> s x s
        mixed = gate_global * (1 - self.local_weight) + gate_local * self.local_weight
        return x * ops.adaptive_avg_pool2d(mixed, x.shape[-2:])  # back up to H x W: any H, W
