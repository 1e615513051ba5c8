"""S2-MLPv2 split attention."""

import torch
from torch import nn


def _clean_shift(x, order):
    """(B, H, W, C) quarter shifts; the forks' in-place version smears in eager, its ONNX does not."""
    b, h, w, c = x.size()
    out = x.clone()
    q = [slice(0, c // 4), slice(c // 4, c // 2), slice(c // 2, c * 3 // 4), slice(c * 3 // 4, c)]
    for quarter, (axis, step) in zip(q, order):
        src = x[..., quarter]
        n = h if axis == 1 else w
        idx = torch.tensor([max(i - 1, 0) if step > 0 else min(i + 1, n - 1) for i in range(n)])
        out[..., quarter] = src.index_select(axis, idx)
    return out


class SplitAttention(nn.Module):
    def __init__(self, channel=512, k=3):
        super().__init__()
        self.channel, self.k = channel, k
        self.mlp1 = nn.Linear(channel, channel, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = nn.Linear(channel, channel * k, bias=False)
        self.softmax = nn.Softmax(1)

    def forward(self, x_all):
        b, k, h, w, c = x_all.shape
        x_all = x_all.reshape(b, k, -1, c)
        a = torch.sum(torch.sum(x_all, 1), 1)
        bar_a = self.softmax(self.mlp2(self.gelu(self.mlp1(a))).reshape(b, self.k, c))
        return torch.sum(bar_a.unsqueeze(-2) * x_all, 1).reshape(b, h, w, c)


class S2Attention(nn.Module):  # split attention sized to the channels (YOLOAir's is fixed at 512)
    def __init__(self, channels=512):
        super().__init__()
        self.mlp1, self.mlp2 = nn.Linear(channels, channels * 3), nn.Linear(channels, channels)
        self.split_attention = SplitAttention(channels)

    def forward(self, x):
        b, c, w, h = x.size()
        x = self.mlp1(x.permute(0, 2, 3, 1))
        x1 = _clean_shift(x[:, :, :, :c], ((1, 1), (1, -1), (2, 1), (2, -1)))
        x2 = _clean_shift(x[:, :, :, c:c * 2], ((2, 1), (2, -1), (1, 1), (1, -1)))
        a = self.split_attention(torch.stack([x1, x2, x[:, :, :, c * 2:]], 1))
        return self.mlp2(a).permute(0, 3, 1, 2)
