"""FasterNet's partial convolution as YOLOv5 forks add it (Chen et al., "Run, Don't Walk:
Chasing Higher FLOPS for Faster Neural Networks", CVPR 2023, arXiv 2303.03667): PConv on the
first C/n_div channels, then a two-layer pointwise MLP, in a residual block inside C3.

This file is a plugin: ``models/yolo.py`` loads it by its path, so it is not importable by
name, and dill pickles its classes and methods by value, with the module's globals.
"""

import torch
from torch import nn

from models.common import C3, Conv


class Partial_conv3(nn.Module):  # noqa: N801
    def __init__(self, dim, n_div=4, forward="split_cat"):
        super().__init__()
        self.dim_conv3 = dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
        # the instance's own forward, as FasterNet picks it: a bound method in the checkpoint
        self.forward = self.forward_slicing if forward == "slicing" else self.forward_split_cat

    def forward_slicing(self, x):
        x = x.clone()
        x[:, :self.dim_conv3, :, :] = self.partial_conv3(x[:, :self.dim_conv3, :, :])
        return x

    def forward_split_cat(self, x):
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(x1), x2), 1)


class Faster_Block(nn.Module):  # noqa: N801
    def __init__(self, inc, dim, n_div=4, mlp_ratio=2, pconv_fw_type="split_cat"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1), nn.Conv2d(hidden, dim, 1, bias=False))
        self.spatial_mixing = Partial_conv3(dim, n_div, pconv_fw_type)
        self.adjust_channel = Conv(inc, dim, 1) if inc != dim else None

    def forward(self, x):
        if self.adjust_channel is not None:
            x = self.adjust_channel(x)
        return x + self.mlp(self.spatial_mixing(x))


class C3_Faster(C3):  # noqa: N801
    def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(Faster_Block(c_, c_) for _ in range(n)))
