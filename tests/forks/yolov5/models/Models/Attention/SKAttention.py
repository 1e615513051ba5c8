"""Selective Kernel attention."""

from collections import OrderedDict

import torch
from torch import nn


class SKAttention(nn.Module):
    def __init__(self, channel=512, kernels=(1, 3, 5, 7), reduction=16, group=1, L=32):  # noqa: N803
        super().__init__()
        self.d = max(L, channel // reduction)
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict([("conv", nn.Conv2d(channel, channel, k, padding=k // 2, groups=group)),
                                       ("bn", nn.BatchNorm2d(channel)), ("relu", nn.ReLU())]))
            for k in kernels
        )
        self.fc = nn.Linear(channel, self.d)
        self.fcs = nn.ModuleList(nn.Linear(self.d, channel) for _ in kernels)
        self.softmax = nn.Softmax(dim=0)

    def forward(self, x):
        bs, c, _, _ = x.size()
        outs = [conv(x) for conv in self.convs]
        feats = torch.stack(outs, 0)
        z = self.fc(sum(outs).mean(-1).mean(-1))
        weights = self.softmax(torch.stack([fc(z).view(bs, c, 1, 1) for fc in self.fcs], 0))
        return (weights * feats).sum(0)
