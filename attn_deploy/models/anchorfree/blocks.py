"""The convolutional blocks of YOLOv8, YOLO11 and YOLO26 (C2f, C3k, C3k2, SPPF, DWConv).

Written from the published architectures; attribute names (``cv1``, ``cv2``, ``m``) are the
checkpoint format of ultralytics' weights, so a state dict maps onto these name for name.
``Conv`` is YOLOv5's (Conv2d without bias, BatchNorm, SiLU): the same module in both families.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attn_deploy.models.anchorfree.psa import PSABlock
from attn_deploy.models.common import C3, Conv


class DWConv(Conv):
    """Depthwise Conv: as many groups as the two channel counts share."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True) -> None:
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Bottleneck(nn.Module):
    """Two convs (kernels ``k``) with a residual when the shapes allow it.

    Unlike YOLOv5's (1x1 then 3x3) both kernels default to 3x3 in the anchor-free family.
    """

    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k: tuple[int, int] = (3, 3), e: float = 0.5
    ) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0], 1)
        self.cv2 = Conv(hidden, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP with every bottleneck's output kept: split in two, chain n blocks on the second
    half, concatenate all 2 + n tensors (YOLOv8's richer gradient flow than C3)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        ys = list(self.cv1(x).split((self.c, self.c), 1))
        for block in self.m:
            ys.append(block(ys[-1]))
        return self.cv2(torch.cat(ys, 1))


class C3k(C3):
    """YOLOv5's C3 with k x k bottlenecks (the 'k' of C3k2)."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k: int = 3
    ) -> None:
        super().__init__(c1, c2, n, shortcut, g, e)
        hidden = int(c2 * e)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))


class C3k2(C2f):
    """C2f whose inner blocks are a Bottleneck, a two-deep C3k (``c3k``), or (YOLO26's
    ``attn``) a Bottleneck followed by a PSA attention block with 64 channels per head."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, attn: bool = False,
        g: int = 1, shortcut: bool = True,
    ) -> None:
        super().__init__(c1, c2, n, shortcut, g, e)
        c = self.c

        def inner() -> nn.Module:
            if attn:
                return nn.Sequential(Bottleneck(c, c, shortcut, g), PSABlock(c, 0.5, num_heads=max(c // 64, 1)))
            return C3k(c, c, 2, shortcut, g) if c3k else Bottleneck(c, c, shortcut, g)

        self.m = nn.ModuleList(inner() for _ in range(n))


class SPPF(nn.Module):
    """Spatial pyramid pooling by chained k x k max-pools.

    ``n=None`` is the SPPF of YOLOv5/v8/11: three pools, an activated first conv. A given
    ``n`` is YOLO26's: n pools, a linear first conv, and an optional residual (``shortcut``).
    Ultralytics tells the two apart the same way, by whether the row gives more than k.
    """

    def __init__(self, c1: int, c2: int, k: int = 5, n: int | None = None, shortcut: bool = False) -> None:
        super().__init__()
        hidden = c1 // 2
        self.n = 3 if n is None else n
        self.cv1 = Conv(c1, hidden, 1, 1, act=n is None)
        self.cv2 = Conv(hidden * (self.n + 1), c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        ys = [self.cv1(x)]
        for _ in range(self.n):
            ys.append(self.m(ys[-1]))
        y = self.cv2(torch.cat(ys, 1))
        return x + y if self.add else y
