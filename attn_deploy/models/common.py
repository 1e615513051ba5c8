"""The YOLOv5 (v6.x / v7.0) building blocks, with the attribute names of ultralytics/yolov5.

The names are the checkpoint format: ``model.4.m.0.cv1.conv.weight`` must mean the same here
as in a yolov5 state dict, so a checkpoint maps onto these modules name for name.
"""

from __future__ import annotations

import contextvars
import math
from typing import Callable

import torch
from torch import Tensor, nn

# The activation every Conv gets unless told otherwise: a yaml's ``activation`` key sets it for
# the duration of one model build (yolov5 assigns Conv.default_act globally instead).
DEFAULT_ACT: contextvars.ContextVar[Callable[[], nn.Module]] = contextvars.ContextVar(
    "default_act", default=nn.SiLU
)


def autopad(k: int | list[int], p: int | None = None, d: int = 1) -> int | list[int]:
    """Padding that keeps the size ('same') for kernel k and dilation d."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias), BatchNorm, activation (SiLU unless the yaml says otherwise)."""

    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
        d: int = 1, act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = DEFAULT_ACT.get()()
        else:
            self.act = act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convolutions."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3/v5 before v6.0)."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """SPP-Fast: three chained k x k max-pools, equal to SPP(k=(5, 9, 13)) for k = 5."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth then Conv (YOLOv5 before v6.0; v6 replaced it with a 6x6 stride-2 Conv)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.cat(
            (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1
        ))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[Tensor]) -> Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """The YOLOv5 head: a 1x1 conv per level, then (in eval) the grid/anchor decode.

    Eval output: (B, sum_l na*H_l*W_l, 5 + nc) with xywh in input pixels,
    xy = (2 sigmoid(t) - 0.5 + grid) * stride and wh = (2 sigmoid(t))^2 * anchor.
    Training output: the raw per-level maps (B, na, H, W, 5 + nc).
    ``anchors`` is a buffer in stride units, as yolov5 stores it.
    """

    stride: Tensor

    def __init__(self, nc: int = 80, anchors: list[list[float]] = (), ch: list[int] = ()) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        # set by the model from a trial forward; a buffer so .to() moves it, not saved
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)

    def forward(self, xs: list[Tensor]) -> Tensor | list[Tensor]:
        raw = [self._level(i, x) for i, x in enumerate(xs)]
        if self.training:
            return raw
        return torch.cat([self._decode(i, p) for i, p in enumerate(raw)], 1)

    def _level(self, i: int, x: Tensor) -> Tensor:
        p = self.m[i](x)
        bs, _, ny, nx = p.shape
        return p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def _decode(self, i: int, p: Tensor) -> Tensor:
        bs, na, ny, nx, no = p.shape
        grid, anchor_grid = self._make_grid(nx, ny, i, p)
        xy, wh, conf = p.sigmoid().split((2, 2, self.nc + 1), 4)
        xy = (xy * 2 + grid) * self.stride[i]
        wh = (wh * 2) ** 2 * anchor_grid
        return torch.cat((xy, wh, conf), 4).reshape(bs, -1, no)

    def _make_grid(self, nx: int, ny: int, i: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Cell offsets minus 0.5, (1, 1, ny, nx, 2), and anchors in pixels, (1, na, 1, 1, 2)."""
        y = torch.arange(ny, device=like.device, dtype=like.dtype)
        x = torch.arange(nx, device=like.device, dtype=like.dtype)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).unsqueeze(0).unsqueeze(0) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(like.dtype)
        return grid, anchor_grid

    def initialize_biases(self) -> None:
        """YOLOv5's prior: objectness for ~8 objects per 640 image, class scores near 0.6/nc."""
        for conv, s in zip(self.m, self.stride.tolist()):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))
