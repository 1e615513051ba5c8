"""Second-order channel attention. Dai et al., "Second-order Attention Network for Single Image
Super-Resolution", CVPR 2019 (SAN), pp. 11065-11074.

    Sigma = (X - mu)(X - mu)^T / M          X: (C, M = H*W), the covariance of the channels
    A = Sigma / tr(Sigma);  Y ~ A^(1/2) by N = 5 Newton-Schulz steps;  Y' = sqrt(tr Sigma) Y
    z_c = mean_i Y'[i, c];  y = x * sigmoid(W2 ReLU(W1 z))

The five-step iteration is approximate (a relative error near 0.2 against the exact root)
and is reproduced as SAN computes it, not replaced by an eigendecomposition: a checkpoint was
trained with exactly this. Written without SAN's M x M centring matrix (164 MB at 80x80) and
without in-place writes into preallocated buffers, which a traced export drops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1, reduction_from, spatial_count
from .registry import register_attention


def newton_schulz_sqrt(a: Tensor, steps: int) -> Tensor:
    """The iSQRT-COV iteration for A^(1/2) of a (B, C, C) matrix with trace 1, as SAN runs it."""
    i3 = 3.0 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    zy = 0.5 * (i3 - a)
    if steps < 2:
        return torch.matmul(a, zy)
    y, z = torch.matmul(a, zy), zy
    for _ in range(steps - 2):
        zy = 0.5 * (i3 - torch.matmul(z, y))
        y, z = torch.matmul(y, zy), torch.matmul(zy, z)
    return 0.5 * torch.matmul(y, i3 - torch.matmul(z, y))


@register_attention("soca", aliases=("SOCA", "SecondOrderChannelAttention"), yaml_args=("reduction",))
class SOCA(AttentionModule):
    def __init__(self, channels: int, reduction: int = 8, iterations: int = 5) -> None:
        super().__init__()
        self.iterations = iterations
        hidden = max(channels // reduction, 1)
        self.conv_du = nn.Sequential(
            conv1x1(channels, hidden), nn.ReLU(), conv1x1(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        xf = x.flatten(2)  # (B, C, M)
        xc = xf - xf.mean(2, keepdim=True)
        cov = torch.matmul(xc, xc.transpose(1, 2)) / spatial_count(x).reshape(1, 1, 1)
        eye = torch.eye(c, dtype=x.dtype, device=x.device)
        # a constant map has no spread: clamp the trace so the gate sees zeros, not 0/0
        trace = (cov * eye).sum((1, 2), keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        root = newton_schulz_sqrt(cov / trace, self.iterations) * torch.sqrt(trace)
        z = root.mean(1).unsqueeze(-1).unsqueeze(-1)  # (B, C, 1, 1)
        return x * self.conv_du(z)

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        return {"reduction": reduction_from(channels, layer.weights()[0][1].shape[0])}
