"""NAM channel attention."""

import torch
from torch import nn


class Channel_Att(nn.Module):  # noqa: N801
    def __init__(self, channels, t=16):
        super().__init__()
        self.channels = channels
        self.bn2 = nn.BatchNorm2d(self.channels, affine=True)

    def forward(self, x):
        residual = x
        x = self.bn2(x)
        weight_bn = self.bn2.weight.data.abs() / torch.sum(self.bn2.weight.data.abs())
        x = torch.mul(weight_bn, x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2).contiguous()
        return torch.sigmoid(x) * residual


class NAMAttention(nn.Module):
    def __init__(self, channels, out_channels=None, no_spatial=True):
        super().__init__()
        self.Channel_Att = Channel_Att(channels)

    def forward(self, x):
        return self.Channel_Att(x)
