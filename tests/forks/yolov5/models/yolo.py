"""yolov5 v7.0's ``models/yolo.py``, trimmed: Detect, parse_model, DetectionModel."""

import importlib
import importlib.util
import math
from copy import deepcopy
from pathlib import Path

import torch
from torch import nn

# isort: off
from models import common
from models.common import Concat
from models.Models import research
from models.Models.Attention import (CBAM as external, CrissCrossAttention, GAMAttention, NAMAttention, S2Attention,
                                     SEAttention, ShuffleAttention, SimAM, SKAttention, SOCA, cbam_official)
# isort: on


def _load_extras():
    """Plugin blocks from models/extra/*.py, loaded by path (never importable by name)."""
    found = []
    for path in sorted((Path(__file__).parent / "extra").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"models.extra.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.append(module)
    return found


EXTRAS = _load_extras()
# every class a yaml may name; later modules win a shared name (YOLOAir's CBAM by default)
MODULES = [common, research, SEAttention, ShuffleAttention, CrissCrossAttention, S2Attention, SimAM, SKAttention,
           NAMAttention, SOCA, GAMAttention, external, *EXTRAS]
CLASSES = {n: c for m in MODULES for n, c in vars(m).items() if isinstance(c, type) and issubclass(c, nn.Module)}
# whose class a yaml's name means where forks share one: the yaml's 'fork' key
FORKS = {"yolov5": [common], "yoloair": [research], "official": [cbam_official]}
BRANCH_A = {"CA", "CBAM", "NAMAttention", "GAMAttention", "SE", "ECA", "SimAM", "CoordAtt"}  # (c1, c2, *args)
CSP = {"C3", "C3_Faster"}  # (c1, c2, n, *args)


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


def parse_model(d, ch):
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    classes = {**CLASSES, **{n: c for m in FORKS.get(d.get("fork"), []) for n, c in vars(m).items()
                             if isinstance(c, type)}}
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        args = [{"nc": nc, "anchors": anchors}.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m == "nn.Upsample":
            module, c2 = nn.Upsample(*args), ch[f]
        elif m == "Concat":
            module, c2 = Concat(*args), sum(ch[x] for x in f)
        elif m == "Detect":
            module = Detect(args[0], args[1], [ch[x] for x in f])
        else:
            c1, c2 = ch[f], math.ceil(args[0] * gw / 8) * 8
            if m in ("Conv", "SPPF", *CSP):
                args = [c1, c2, *args[1:]]
                if m in CSP:
                    args.insert(2, n)
                module = classes[m](*args)
            else:
                module = classes[m](c1, c2, *args[1:]) if m in BRANCH_A else classes[m](c1, *args[1:])
        module.i, module.f, module.type = i, f, m
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        ch = [] if i == 0 else ch
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


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


class Model(DetectionModel):  # v6.x's name for the same class
    pass
