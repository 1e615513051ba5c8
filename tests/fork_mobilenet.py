"""A stand-in for a YOLOv5 fork with a MobileNetV3 backbone and Ghost convolutions, and its
``best.pt``: the fork's classes written as such forks write them (``models.common``: Linear
SE layers, ``conv`` Sequentials, ``cv1``/``cv2`` Ghost halves), independently of the block
file in ``examples/blocks``, which is our own code from the papers. The checkpoint is saved
with dill, as some forks save theirs, with a bound method and a lambda on its objects whose
code would create a marker file if anything ran it.

    python tests/fork_mobilenet.py OUT.pt [MARKER]   # writes the example checkpoint
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import yolov5_standin as y5

YAML: dict[str, Any] = {
    "nc": 4, "depth_multiple": 0.33, "width_multiple": 0.5,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [
        [-1, 1, "conv_bn_hswish", [16, 2]],
        [-1, 1, "MobileNet_Block", [16, 16, 3, 2, 1, 0]],
        [-1, 1, "MobileNet_Block", [24, 72, 3, 2, 0, 0]],
        [-1, 1, "MobileNet_Block", [24, 88, 3, 1, 0, 0]],
        [-1, 1, "MobileNet_Block", [40, 96, 5, 2, 1, 1]],
        [-1, 1, "MobileNet_Block", [40, 240, 5, 1, 1, 1]],
        [-1, 1, "MobileNet_Block", [48, 120, 5, 1, 1, 1]],
        [-1, 1, "MobileNet_Block", [96, 288, 5, 2, 1, 1]],
        [-1, 1, "MobileNet_Block", [96, 576, 5, 1, 1, 1]],
    ],
    "head": [
        [-1, 1, "GhostConv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],
        [-1, 1, "GhostConv", [128, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 3], 1, "Concat", [1]],
        [-1, 1, "C3", [128, False]],
        [-1, 1, "GhostConv", [128, 3, 2]],
        [[-1, 13], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],
        [-1, 1, "GhostConv", [256, 3, 2]],
        [[-1, 9], 1, "Concat", [1]],
        [-1, 1, "C3", [512, False]],
        [[16, 19, 22], 1, "Detect", ["nc", "anchors"]],
    ],
}


h_sigmoid, h_swish = y5.h_sigmoid, y5.h_swish  # the fork's own, in models.common


SELayer = y5.MODULES["models.common"].SELayer  # the fork's MobileNetV3 SE: Linear layers, a hard-sigmoid gate


@y5._place("models.common.conv_bn_hswish")
class conv_bn_hswish(nn.Module):  # noqa: N801
    def __init__(self, c1, c2, stride):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = h_swish()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


@y5._place("models.common.MobileNet_Block")
class MobileNet_Block(nn.Module):  # noqa: N801
    def __init__(self, inp, oup, hidden_dim, kernel_size, stride, use_se, use_hs):
        super().__init__()
        self.identity = stride == 1 and inp == oup
        act = h_swish() if use_hs else nn.ReLU(inplace=True)
        se = SELayer(hidden_dim) if use_se else nn.Sequential()
        dw = [nn.Conv2d(hidden_dim, hidden_dim, kernel_size, stride, (kernel_size - 1) // 2, groups=hidden_dim,
                        bias=False), nn.BatchNorm2d(hidden_dim)]
        pw_linear = [nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        if inp == hidden_dim:
            self.conv = nn.Sequential(*dw, act, se, *pw_linear)
        else:
            self.conv = nn.Sequential(nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden_dim),
                                      act, *dw, se, act, *pw_linear)

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.identity else y


@y5._place("models.common.GhostConv")
class GhostConv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = y5.Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = y5.Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x):
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


FORK_CLASSES = ("conv_bn_hswish", "MobileNet_Block", "GhostConv")


def install() -> None:
    y5.install()
    y5.CLASSES.update({n: getattr(y5.MODULES["models.common"], n) for n in FORK_CLASSES})
    y5.BRANCH_A.update(FORK_CLASSES)


def model() -> nn.Module:
    """The fork's model with trained-looking weights (BN statistics, gates)."""
    install()
    return y5.randomize(y5.DetectionModel(YAML))


def _touch(marker: str, *_: Any) -> None:
    Path(marker).touch()


def save(path: Path, net: nn.Module, marker: Path) -> Path:
    """``net`` saved as the fork's train.py would, with dill, plus what dill lets a fork pickle
    by value: a bound method and a lambda whose code would create ``marker``."""
    import dill

    ckpt = y5.training_checkpoint(net)
    half = ckpt["ema"]
    touch = eval(f"lambda self, x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307 - code made here, pickled by value
    half.model[1].forward = types.MethodType(touch, half.model[1])
    half.model[9].act_fn = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307
    with warnings.catch_warnings():  # dill: classes of the stand-in's modules are pickled by value
        warnings.simplefilter("ignore")
        torch.save(ckpt, path, pickle_module=dill)
    del half.model[1].forward, half.model[9].act_fn
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1])
    save(out, model(), Path(sys.argv[2]) if len(sys.argv) > 2 else out.with_suffix(".ran"))
