"""SimAM, YOLOAir passing the yaml channel count as lambda."""

from torch import nn


class SimAM(nn.Module):
    def __init__(self, channels=None, e_lambda=1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x):
        b, c, h, w = x.size()
        n = w * h - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return x * self.activaton(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5)
