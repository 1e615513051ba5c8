"""Block file for a YOLOv5 fork with FasterNet's partial convolution in its CSP blocks.

Written from the paper (our own code, not the fork's): Chen et al., "Run, Don't Walk: Chasing
Higher FLOPS for Faster Neural Networks", CVPR 2023, arXiv 2303.03667. A FasterNet block is
a partial convolution (PConv: a 3x3 convolution over the first c/n_div channels, the rest
passed through), then a pointwise MLP (1x1 expansion with BatchNorm and an activation, 1x1
projection), added to its input. The forks put it inside YOLOv5's C3 in place of the
bottlenecks (``C3_Faster``), with YOLOv5's Conv (SiLU) as the MLP's first layer.

Their checkpoints are often saved with dill while the block's module was loaded by its path:
its classes, its methods (PConv's ``forward`` is set on each instance) and its module's
globals are pickled by value. The checkpoint reader never runs any of it; the classes below
take its tensors by order, which follows the fork's (cv1, cv2, cv3, then per block the MLP's
two convolutions and PConv's).

    attn-deploy blocks examples/blocks/fasternet.py
    attn-deploy export --weights best.pt --blocks examples/blocks/fasternet.py
"""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.blocks import block
from attn_deploy.models.common import C3, Conv


class PartialConv(nn.Module):
    """PConv: a 3x3 convolution over the first c // n_div channels; the others pass through."""

    def __init__(self, c: int, n_div: int = 4) -> None:
        super().__init__()
        self.part = c // n_div
        self.conv = nn.Conv2d(self.part, self.part, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.conv(x[:, : self.part]), x[:, self.part:]), 1)


class FasterBlock(nn.Module):
    """PConv, then a pointwise MLP (c -> expansion * c -> c), added to the input."""

    def __init__(self, c: int, n_div: int = 4, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(c * expansion)
        self.mlp = nn.Sequential(Conv(c, hidden, 1), nn.Conv2d(hidden, c, 1, bias=False))
        self.pconv = PartialConv(c, n_div)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.pconv(x))


@block("C3_Faster", "models.extra.fasternet.C3_Faster", rule="csp", example=[64], example_channels=32)
class C3Faster(C3):
    """YOLOv5's C3 whose bottlenecks are FasterNet blocks: (c1, c2, n, shortcut, g, e)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.Sequential(*(FasterBlock(int(c2 * e)) for _ in range(n)))
