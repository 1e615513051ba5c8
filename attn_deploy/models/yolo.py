"""YOLOv5 assembled from the yolov5 yaml format, attention rows included.

A yaml (or dict) has ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and
``backbone``/``head`` rows of ``[from, number, module, args]``. Module names resolve through
two explicit tables (the YOLOv5 blocks and the attention registry), never ``eval``; string
arguments go through ``ast.literal_eval``. Channel bookkeeping follows yolov5's
``parse_model``; attention rows keep their input's channel count.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attn_deploy.errors import UserError
from attn_deploy.files import check_expansion, read_yaml
from attn_deploy.models import common
from attn_deploy.models.rows import (
    MAX_CHANNELS,
    LayerWatch,
    MAX_CLASSES,
    MAX_ROWS,
    Row,
    RowBuilder,
    assemble,
    is_number,
    make_divisible,
    short_repr,
    trial_failure,
)

# yaml module names -> classes; blocks that take (c1, c2, ...) from the channel bookkeeping
CHANNEL_BLOCKS = {"Conv": common.Conv, "Bottleneck": common.Bottleneck, "C3": common.C3,
                  "SPP": common.SPP, "SPPF": common.SPPF, "Focus": common.Focus}
REPEATED_BLOCKS = frozenset({"C3"})  # blocks that take the repeat count as an argument
OTHER_BLOCKS: dict[str, type[nn.Module]] = {
    "Concat": common.Concat, "Detect": common.Detect, "Upsample": nn.Upsample,
    "BatchNorm2d": nn.BatchNorm2d, "Identity": nn.Identity,
}


def check_cfg(cfg: dict[str, Any], where: str) -> None:
    """The scalar keys of a model definition, checked before anything is built from them."""
    nc = cfg.get("nc")
    if not (isinstance(nc, int) and not isinstance(nc, bool) and 0 < nc <= MAX_CLASSES):
        raise UserError(f"{where}: 'nc' must be a class count from 1 to {MAX_CLASSES}, not {short_repr(nc)}")
    for key in ("depth_multiple", "width_multiple"):
        v = cfg.get(key, 1.0)
        if not (is_number(v) and 0 < v <= 10):
            raise UserError(f"{where}: {key!r} must be a number in (0, 10], not {short_repr(v)}")
    a = cfg.get("anchors")
    grid = isinstance(a, list) and a and all(
        isinstance(r, list) and r and len(r) % 2 == 0 and all(is_number(x) and x > 0 for x in r) for r in a)
    count = isinstance(a, int) and not isinstance(a, bool) and 0 < a <= 100
    if not (grid or count):
        raise UserError(f"{where}: 'anchors' must be rows of positive w,h pairs or an anchor count, not {short_repr(a)}")
    ch = cfg.get("ch", 3)
    if not (isinstance(ch, int) and not isinstance(ch, bool) and 0 < ch <= 64):
        raise UserError(f"{where}: 'ch' must be an input channel count from 1 to 64, not {short_repr(ch)}")
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise UserError(f"{where}: {key!r} must be a list of [from, number, module, args] rows")
    if len(cfg["backbone"]) + len(cfg["head"]) > MAX_ROWS:
        raise UserError(f"{where}: more than {MAX_ROWS} rows")


class ModelBuilder(RowBuilder):
    """YOLOv5's channel rules: widths times ``width_multiple`` (the Detect width ``no`` kept)."""

    channel_blocks = CHANNEL_BLOCKS
    repeated = REPEATED_BLOCKS
    other_blocks = OTHER_BLOCKS

    def __init__(self, cfg: dict[str, Any], ch: int, where: str) -> None:
        check_cfg(cfg, where)
        self.nc = int(cfg["nc"])
        anchors = cfg["anchors"]
        self.na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
        self.no = self.na * (self.nc + 5)
        self.gw = float(cfg.get("width_multiple", 1.0))
        super().__init__(where, ch, float(cfg.get("depth_multiple", 1.0)), {"nc": self.nc, "anchors": anchors})

    def width(self, c2: Any) -> int:
        if not (is_number(c2) and 0 < c2 <= MAX_CHANNELS):
            raise UserError(f"output channels must be a number from 1 to {MAX_CHANNELS}, not {short_repr(c2)}")
        return c2 if c2 == self.no else make_divisible(c2 * self.gw, 8)

    def head(self, args: list[Any], chs: list[int]) -> nn.Module:
        args = [*args[:2], chs] if len(args) >= 2 else [self.nc, self.names["anchors"], chs]
        if isinstance(args[1], int):  # a number of anchors: placeholders, autoanchor sets them
            args[1] = [list(range(args[1] * 2))] * len(chs)
        return common.Detect(*args)


def parse_model(
    cfg: dict[str, Any], ch: int, where: str
) -> tuple[nn.Sequential, list[int], list[Row], list[int]]:
    """yolov5's ``parse_model`` without eval: layers, kept indices, rows, output channels."""
    builder = ModelBuilder(cfg, ch, where)
    layers, save, rows = assemble(builder, cfg, where)
    return layers, save, rows, builder.ch


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A model yaml file as a dict; a user error when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model yaml not found: {p}")
    cfg = read_yaml(p, "model yaml")
    if not isinstance(cfg, dict):
        raise UserError(f"{p} does not hold a model definition (a mapping with nc, anchors, backbone, head)")
    return cfg


class DetectionModel(nn.Module):
    """A YOLOv5 detector; ``model.{i}`` is yaml row i, as in yolov5 state dicts."""

    def __init__(
        self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None, name: str = "model",
        source: str | None = None,
    ) -> None:
        super().__init__()
        where = source or name  # how errors name the definition: a file, or the model
        if not isinstance(cfg, dict):
            raise UserError(f"{where}: the model definition is not a mapping")
        check_expansion(cfg, where)
        self.yaml = copy.deepcopy(cfg)
        self.name = name
        for key in ("nc", "anchors", "backbone", "head"):
            if key not in self.yaml:
                raise UserError(f"{where}: the model definition has no {key!r}")
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        self.yaml.setdefault("ch", ch)
        check_cfg(self.yaml, where)
        ch = self.yaml["ch"]
        self.model, self.save, self.rows, self.out_channels = parse_model(copy.deepcopy(self.yaml), ch, where)
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.readings: list[dict[str, Any]] = []  # how a checkpoint's open choices were read (mapping.py)
        detect = self.model[-1]
        if not isinstance(detect, common.Detect):
            raise UserError(f"{where}: the last row must be Detect")
        detect.stride.copy_(self._trial_strides(ch, where))
        _check_anchor_order(detect)
        detect.anchors /= detect.stride.view(-1, 1, 1)
        self.stride = detect.stride
        detect.initialize_biases()
        for m in self.modules():  # yolov5's initialize_weights
            if type(m) is nn.BatchNorm2d:
                m.eps, m.momentum = 1e-3, 0.03

    @property
    def detect(self) -> common.Detect:
        return self.model[-1]

    def _trial_strides(self, ch: int, where: str, s: int = 256) -> Tensor:
        """Strides from the sizes of Detect's inputs on an s x s image (in eval, no grad)."""
        seen: list[int] = []
        hook = self.detect.register_forward_pre_hook(lambda m, inp: seen.extend(x.shape[-2] for x in inp[0]))
        was_training = self.training
        try:
            with torch.no_grad(), LayerWatch(self.model) as watch:
                self.eval()(torch.zeros(1, ch, s, s))
        except Exception as e:  # noqa: BLE001 - rows that do not fit together; a user block's code
            trial_failure(where, s, e, watch)
            raise
        finally:
            hook.remove()
            self.train(was_training)
        return torch.tensor([s / h for h in seen])

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        y: list[Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


MAX_SIDE = 4096  # pixels: 6x YOLOv5's largest training size; beyond it nobody means it
MAX_BATCH = 1024
MAX_INPUT = 64 * 3 * 1024 * 1024  # elements of one input batch (768 MiB of float32)


def check_size_limits(imgsz: tuple[int, int], batch: int = 1) -> tuple[int, int]:
    """Refuse sizes no one means, before anything allocates a tensor of that size."""
    h, w = imgsz
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise UserError(f"image size {h} x {w} is outside 1 to {MAX_SIDE} pixels per side")
    if not 0 < batch <= MAX_BATCH:
        raise UserError(f"batch {batch} is outside 1 to {MAX_BATCH}")
    if batch * 3 * h * w > MAX_INPUT:
        raise UserError(f"batch {batch} of {h} x {w} images is over {MAX_INPUT // 2**20}M input values "
                        f"({MAX_INPUT * 4 // 2**20} MiB); use a smaller batch")
    return imgsz


def check_imgsz(imgsz: tuple[int, int], stride: int) -> tuple[int, int]:
    """The (H, W) input size, refused unless both are multiples of the model's largest stride."""
    check_size_limits(imgsz)
    bad = [x for x in imgsz if x <= 0 or x % stride]
    if bad:
        fix = " x ".join(str(max(stride, math.ceil(x / stride) * stride)) for x in imgsz)
        raise UserError(f"image size {imgsz[0]} x {imgsz[1]} is not a multiple of the model's stride {stride}", f"try {fix}")
    return imgsz


def build_model(
    cfg: dict[str, Any], name: str, nc: int | None = None, seed: int = 0, source: str | None = None
) -> DetectionModel:
    """A model initialised from a fixed seed (so every build is identical), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DetectionModel(cfg, nc=nc, name=name, source=source).eval()


def _check_anchor_order(m: common.Detect) -> None:
    """Anchors must grow with the stride (yolov5's check_anchor_order); flip them if not."""
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], m.stride[-1] - m.stride[0]
    if da and (da.sign() != ds.sign()):
        m.anchors[:] = m.anchors.flip(0)
