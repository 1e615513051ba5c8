"""Block file for a YOLOv5 fork with a MobileNetV3 backbone and Ghost convolutions.

Written from the papers (our own code, not the fork's): MobileNetV3's bottleneck (Howard et
al., "Searching for MobileNetV3", 2019: 1x1 expansion, depthwise kxk, squeeze-and-excite
with a hard sigmoid, linear 1x1 projection, residual when the shape is kept) and the Ghost
module (Han et al., "GhostNet: More Features from Cheap Operations", 2020: a primary
convolution makes half the channels, a cheap depthwise one makes the other half from them).

Each class is registered under the name the fork's yaml writes and the path its pickle
names; all three follow the fork's Conv branch of parse_model (rule "conv": input channels
first, then the row's output channels, scaled by the width multiple).

    attn-deploy blocks examples/blocks/mobilenetv3_ghost.py
    attn-deploy export --weights best.pt --blocks examples/blocks/mobilenetv3_ghost.py
"""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.blocks import block


@block("conv_bn_hswish", "models.common.conv_bn_hswish", rule="conv", example=[16, 2], example_channels=3)
class StemConv(nn.Module):
    """MobileNetV3's stem: 3x3 convolution (stride s), BatchNorm, hard swish."""

    def __init__(self, c1: int, c2: int, s: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, s, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """SE as MobileNetV3 uses it: global mean, 1x1 reduce to c/4, ReLU, 1x1 expand, hard
    sigmoid (the paper rounds c/4 to a multiple of 8; the fork's source does not, nor do we)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        mid = c // 4
        self.reduce = nn.Conv2d(c, mid, 1)
        self.expand = nn.Conv2d(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean((2, 3), keepdim=True)  # a reduction, not an adaptive pool: any H, W exports
        return x * nn.functional.hardsigmoid(self.expand(nn.functional.relu(self.reduce(w))))


@block("MobileNet_Block", "models.common.MobileNet_Block", rule="conv",
       example=[24, 72, 3, 2, 1, 0], example_channels=16)
class Bneck(nn.Module):
    """MobileNetV3's bottleneck: (c1, c2, hidden, kernel, stride, use_se, use_hs)."""

    def __init__(self, c1: int, c2: int, hidden: int, k: int, s: int, use_se: int, use_hs: int) -> None:
        super().__init__()
        act = nn.Hardswish if use_hs else nn.ReLU
        self.residual = s == 1 and c1 == c2
        se = [SqueezeExcite(hidden)] if use_se else []
        depthwise = [nn.Conv2d(hidden, hidden, k, s, k // 2, groups=hidden, bias=False), nn.BatchNorm2d(hidden)]
        project = [nn.Conv2d(hidden, c2, 1, bias=False), nn.BatchNorm2d(c2)]
        if hidden == c1:  # no expansion: the fork's source activates before SE here
            layers = [*depthwise, act(), *se, *project]
        else:  # expansion first; SE between the depthwise convolution and its activation
            layers = [nn.Conv2d(c1, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act(), *depthwise, *se, act(),
                      *project]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


@block("GhostConv", "models.common.GhostConv", rule="conv", example=[64, 1, 1], example_channels=32)
class Ghost(nn.Module):
    """The Ghost module: a primary convolution to c2/2 channels, a 5x5 depthwise 'cheap
    operation' on them, both concatenated; BatchNorm and SiLU after each (YOLOv5's Conv)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        half = c2 // 2
        self.primary = nn.Sequential(nn.Conv2d(c1, half, k, s, k // 2, bias=False), nn.BatchNorm2d(half), nn.SiLU())
        self.cheap = nn.Sequential(nn.Conv2d(half, half, 5, 1, 2, groups=half, bias=False), nn.BatchNorm2d(half),
                                   nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat((y, self.cheap(y)), 1)
