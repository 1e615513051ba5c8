"""A stand-in for ultralytics/yolov5 and the forks' attention classes, for checkpoint tests.

Training checkpoints are pickles of these classes under yolov5's module paths
(``models.yolo.DetectionModel``, ``models.common.Conv``, YOLOAir's
``models.Models.research.CA`` ...). ``install()`` registers such modules in ``sys.modules``
so that ``torch.save`` writes a checkpoint exactly as the real code would. The classes are
written here in the forks' own forms (Linear layers on pooled vectors, adaptive pools, the
batch-folded Shuffle Attention, SAN's Covpool/Sqrtm, CCNet's INF helper), independently of
attn_deploy's modules, so a rebuilt model that matches them proves the mapping.
"""

from __future__ import annotations

import math
import sys
import types
from collections import OrderedDict
from copy import deepcopy
from typing import Any

import torch
from torch import nn

MODULES: dict[str, types.ModuleType] = {}


def _place(path: str):
    """Decorator: make a class (or function) importable as ``path`` for pickle."""

    def wrap(obj: Any) -> Any:
        module, _, name = path.rpartition(".")
        obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
        MODULES.setdefault(module, types.ModuleType(module))
        setattr(MODULES[module], name, obj)
        return obj

    return wrap


# ---- yolov5 models/common.py and models/yolo.py (v7.0) ----------------------------------


@_place("models.common.Conv")
class Conv(nn.Module):
    default_act = nn.SiLU()

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


@_place("models.common.Bottleneck")
class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2 = Conv(c1, c_, 1, 1), Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


@_place("models.common.C3")
class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_, 1, 1), Conv(c1, c_, 1, 1), Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


@_place("models.common.SPPF")
class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1, 1), Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


@_place("models.common.Concat")
class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


@_place("models.yolo.Detect")
class Detect(nn.Module):
    stride = None

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2).float() - 0.5
                anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).expand(1, self.na, ny, nx, 2)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                y = torch.cat(((xy * 2 + grid) * self.stride[i], (wh * 2) ** 2 * anchor_grid, conf), 4)
                z.append(y.view(bs, self.na * nx * ny, self.no))
        return x if self.training else (torch.cat(z, 1), x)


# ---- the forks' attention classes --------------------------------------------------------


@_place("models.common.SE")
class SE(nn.Module):  # tutorial convention: SE(c1, c2, ratio=16), Linear l1/l2 without bias
    def __init__(self, c1, c2, ratio=16):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.l1, self.relu = nn.Linear(c1, c1 // ratio, bias=False), nn.ReLU(inplace=True)
        self.l2, self.sig = nn.Linear(c1 // ratio, c1, bias=False), nn.Sigmoid()

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.sig(self.l2(self.relu(self.l1(self.avgpool(x).view(b, c)))))
        return x * y.view(b, c, 1, 1).expand_as(x)


@_place("models.Models.Attention.SEAttention.SEAttention")
class SEAttention(nn.Module):  # YOLOAir / External: fc.0, fc.2
    def __init__(self, channel=512, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1).expand_as(x)


@_place("models.common.ECA")
class ECA(nn.Module):  # tutorial: ECA(c1, c2, k_size=3)
    def __init__(self, c1, c2, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.conv(self.avg_pool(x).squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


@_place("models.Models.research.h_sigmoid")
class h_sigmoid(nn.Module):  # noqa: N801
    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


@_place("models.Models.research.h_swish")
class h_swish(nn.Module):  # noqa: N801
    def __init__(self, inplace=True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x):
        return x * self.sigmoid(x)


@_place("models.Models.research.CA")
class CA(nn.Module):  # YOLOAir: adaptive pools built in forward
    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        mip = max(8, inp // reduction)
        self.conv1, self.bn1, self.act = nn.Conv2d(inp, mip, 1), nn.BatchNorm2d(mip), h_swish()
        self.conv_h, self.conv_w = nn.Conv2d(mip, oup, 1), nn.Conv2d(mip, oup, 1)

    def forward(self, x):
        identity = x
        n, c, h, w = x.size()
        x_h = nn.AdaptiveAvgPool2d((h, 1))(x)
        x_w = nn.AdaptiveAvgPool2d((1, w))(x).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return identity * a_w * a_h


@_place("models.Models.research.ChannelAttentionModule")
class ChannelAttentionModule(nn.Module):
    def __init__(self, c1, reduction=16):
        super().__init__()
        mid = c1 // reduction
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.shared_MLP = nn.Sequential(nn.Linear(c1, mid), nn.LeakyReLU(0.1, inplace=True), nn.Linear(mid, c1))
        self.act = nn.Sigmoid()

    def forward(self, x):
        avgout = self.shared_MLP(self.avg_pool(x).view(x.size(0), -1)).unsqueeze(2).unsqueeze(3)
        maxout = self.shared_MLP(self.max_pool(x).view(x.size(0), -1)).unsqueeze(2).unsqueeze(3)
        return self.act(avgout + maxout)


@_place("models.Models.research.SpatialAttentionModule")
class SpatialAttentionModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels=2, out_channels=1, kernel_size=7, stride=1, padding=3)
        self.act = nn.Sigmoid()

    def forward(self, x):
        avgout = torch.mean(x, dim=1, keepdim=True)
        maxout, _ = torch.max(x, dim=1, keepdim=True)
        return self.act(self.conv2d(torch.cat([avgout, maxout], dim=1)))


@_place("models.Models.research.CBAM")
class CBAM(nn.Module):  # YOLOAir CBAM(c1, c2)
    def __init__(self, c1, c2):
        super().__init__()
        self.channel_attention = ChannelAttentionModule(c1)
        self.spatial_attention = SpatialAttentionModule()

    def forward(self, x):
        out = self.channel_attention(x) * x
        return self.spatial_attention(out) * out


@_place("models.Models.Attention.ShuffleAttention.ShuffleAttention")
class ShuffleAttention(nn.Module):
    def __init__(self, channel=512, reduction=16, G=8):  # noqa: N803
        super().__init__()
        self.G, self.channel = G, channel
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.gn = nn.GroupNorm(channel // (2 * G), channel // (2 * G))
        self.cweight = nn.Parameter(torch.zeros(1, channel // (2 * G), 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, channel // (2 * G), 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, channel // (2 * G), 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, channel // (2 * G), 1, 1))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        b, c, h, w = x.size()
        x = x.view(b * self.G, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        x_channel = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        x_spatial = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([x_channel, x_spatial], dim=1).contiguous().view(b, -1, h, w)
        return out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)


@_place("models.Models.Attention.CrissCrossAttention.INF")
def INF(B, H, W):  # noqa: N802, N803
    return -torch.diag(torch.tensor(float("inf")).repeat(H), 0).unsqueeze(0).repeat(B * W, 1, 1)


@_place("models.Models.Attention.CrissCrossAttention.CrissCrossAttention")
class CrissCrossAttention(nn.Module):  # CCNet's pure-PyTorch version, CPU mask
    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, 1)
        self.softmax = nn.Softmax(dim=3)
        self.INF = INF
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, _, h, w = x.size()
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        q_h = q.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h).permute(0, 2, 1)
        q_w = q.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w).permute(0, 2, 1)
        k_h = k.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)
        k_w = k.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)
        v_h = v.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)
        v_w = v.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)
        e_h = (torch.bmm(q_h, k_h) + self.INF(b, h, w)).view(b, w, h, h).permute(0, 2, 1, 3)
        e_w = torch.bmm(q_w, k_w).view(b, h, w, w)
        att = self.softmax(torch.cat([e_h, e_w], 3))
        att_h = att[:, :, :, 0:h].permute(0, 2, 1, 3).contiguous().view(b * w, h, h)
        att_w = att[:, :, :, h:h + w].contiguous().view(b * h, w, w)
        out_h = torch.bmm(v_h, att_h.permute(0, 2, 1)).view(b, w, -1, h).permute(0, 2, 3, 1)
        out_w = torch.bmm(v_w, att_w.permute(0, 2, 1)).view(b, h, -1, w).permute(0, 2, 1, 3)
        return self.gamma * (out_h + out_w) + x


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


@_place("models.Models.Attention.S2Attention.SplitAttention")
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


@_place("models.Models.Attention.S2Attention.S2Attention")
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


@_place("models.Models.Attention.SimAM.SimAM")
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


@_place("models.Models.Attention.SKAttention.SKAttention")
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


@_place("models.Models.Attention.NAMAttention.Channel_Att")
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


@_place("models.Models.Attention.NAMAttention.NAMAttention")
class NAMAttention(nn.Module):
    def __init__(self, channels, out_channels=None, no_spatial=True):
        super().__init__()
        self.Channel_Att = Channel_Att(channels)

    def forward(self, x):
        return self.Channel_Att(x)


@_place("models.Models.Attention.SOCA.SOCA")
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


@_place("models.Models.Attention.GAMAttention.GAMAttention")
class GAMAttention(nn.Module):  # YOLOAir: grouped, shuffled, no channel sigmoid
    def __init__(self, c1, c2, group=True, rate=4):
        super().__init__()
        self.channel_attention = nn.Sequential(nn.Linear(c1, int(c1 / rate)), nn.ReLU(inplace=True),
                                               nn.Linear(int(c1 / rate), c1))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(c1, c1 // rate, kernel_size=7, padding=3, groups=rate), nn.BatchNorm2d(int(c1 / rate)),
            nn.ReLU(inplace=True), nn.Conv2d(c1 // rate, c2, kernel_size=7, padding=3, groups=rate), nn.BatchNorm2d(c2))

    def forward(self, x):
        b, c, h, w = x.shape
        att = self.channel_attention(x.permute(0, 2, 3, 1).view(b, -1, c)).view(b, h, w, c)
        x = x * att.permute(0, 3, 1, 2)
        s = self.spatial_attention(x).sigmoid()
        s = s.view(b, 4, c // 4, h, w).permute(0, 2, 1, 3, 4).contiguous().view(b, c, h, w)
        return x * s


# ---- parse_model and DetectionModel (a trimmed yolov5 models/yolo.py) -----------------------

BRANCH_A = {"CA", "CBAM", "NAMAttention", "GAMAttention", "SE", "ECA", "SimAM"}  # (c1, c2, *args)
BRANCH_B = {"SEAttention", "ShuffleAttention", "CrissCrossAttention", "S2Attention", "SKAttention", "SOCA"}
CLASSES = {n: getattr(MODULES[m], n) for m in MODULES for n in dir(MODULES[m]) if isinstance(getattr(MODULES[m], n), type)}


def parse_model(d, ch):
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        args = [{"nc": nc, "anchors": anchors}.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m == "nn.Upsample":
            module, c2 = nn.Upsample(*args), ch[f]
        elif m in ("Conv", "C3", "SPPF"):
            c1, c2 = ch[f], math.ceil(args[0] * gw / 8) * 8
            args = [c1, c2, *args[1:]]
            if m == "C3":
                args.insert(2, n)
            module = CLASSES[m](*args)
        elif m == "Concat":
            module, c2 = Concat(*args), sum(ch[x] for x in f)
        elif m == "Detect":
            module = Detect(args[0], args[1], [ch[x] for x in f])
        else:
            c1, c2 = ch[f], math.ceil(args[0] * gw / 8) * 8
            module = CLASSES[m](c1, c2, *args[1:]) if m in BRANCH_A else CLASSES[m](c1, *args[1:])
        module.i, module.f, module.type = i, f, m
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        ch = [] if i == 0 else ch
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


@_place("models.yolo.DetectionModel")
class DetectionModel(nn.Module):
    def __init__(self, cfg, ch=3, nc=None):
        super().__init__()
        self.yaml = deepcopy(cfg)
        self.yaml["ch"] = ch
        if nc:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        m = self.model[-1]
        s = 256
        m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(2, ch, s, s))])
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        for mod in self.modules():
            if type(mod) is nn.BatchNorm2d:
                mod.eps, mod.momentum = 1e-3, 0.03

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


@_place("models.yolo.Model")
class Model(DetectionModel):  # v6.x's name for the same class
    pass


def install() -> None:
    for name in ("models", "models.Models", "models.Models.Attention"):
        MODULES.setdefault(name, types.ModuleType(name))
    sys.modules.update(MODULES)


def uninstall() -> None:
    for name in MODULES:
        sys.modules.pop(name, None)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking weights: BN statistics and zero-initialised gates made non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "cweight", "sweight")) or "bn" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.05)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def training_checkpoint(model: nn.Module, ema: bool = True) -> dict[str, Any]:
    """What yolov5's train.py saves (after strip_optimizer: no optimizer state)."""
    import numpy as np

    half = deepcopy(model).half()
    return {
        "epoch": -1, "best_fitness": np.array([0.4213]), "model": None if ema else half,
        "ema": half if ema else None, "updates": 1234, "optimizer": None,
        "opt": {"weights": "yolov5n.pt", "cfg": "models/yolov5n.yaml", "epochs": 100, "imgsz": 640},
        "git": {"remote": "https://github.com/ultralytics/yolov5", "branch": "master", "commit": "915bbf2"},
        "date": "2026-11-25T10:00:00",
    }

