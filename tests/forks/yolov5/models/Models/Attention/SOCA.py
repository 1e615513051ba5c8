"""SAN's second-order channel attention."""

import torch
from torch import nn


class SOCA(nn.Module):  # SAN's SOCA with MPNCOV's Covpool (M x M centring) and Sqrtm (5 steps)
    def __init__(self, channel, reduction=8):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(channel, channel // reduction, 1, bias=True), nn.ReLU(inplace=True),
                                     nn.Conv2d(channel // reduction, channel, 1, bias=True), nn.Sigmoid())

    def forward(self, x):
        b, c, h, w = x.shape
        m = h * w
        xf = x.reshape(b, c, m)
        i_hat = (-1.0 / m / m) * torch.ones(m, m) + (1.0 / m) * torch.eye(m)
        cov = xf.bmm(i_hat.expand(b, m, m)).bmm(xf.transpose(1, 2))
        i3 = 3.0 * torch.eye(c).expand(b, c, c)
        norm_a = (1.0 / 3.0) * cov.mul(i3).sum(dim=1).sum(dim=1)
        a = cov / norm_a.view(b, 1, 1)
        zy = 0.5 * (i3 - a)
        y, z = a.bmm(zy), zy
        for _ in range(3):
            zy = 0.5 * (i3 - z.bmm(y))
            y, z = y.bmm(zy), zy.bmm(z)
        root = 0.5 * y.bmm(i3 - z.bmm(y)) * torch.sqrt(norm_a).view(b, 1, 1)
        return self.conv_du(torch.mean(root, 1).view(b, c, 1, 1)) * x
