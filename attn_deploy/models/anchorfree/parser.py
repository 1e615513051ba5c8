"""Ultralytics-format model yaml -> layers, by tables (never eval), as its ``parse_model`` sizes them.

A definition has ``nc``, ``scales`` (letter -> [depth, width, max_channels]; or the older
``depth_multiple``/``width_multiple``), optional ``reg_max`` (DFL bins, 16) and ``end2end``,
and ``backbone``/``head`` rows of ``[from, repeats, module, args]``. Channel rules:
a channel block's output is ``make_divisible(min(c2, max_channels) * width, 8)``; a repeat
count n > 1 becomes ``max(round(n * depth), 1)``; repeated blocks take it as an argument.
Two rules depend on the scale letter, as in ultralytics: C3k2 uses C3k inner blocks at m/l/x,
and A2C2f gets its residual (and a 1.2 MLP) at l/x. Attention-registry rows keep channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from attn_deploy.errors import UserError
from attn_deploy.models import common
from attn_deploy.models.anchorfree import area, blocks, head, psa
from attn_deploy.models.rows import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_ROWS,
    Row,
    RowBuilder,
    assemble,
    is_number,
    make_divisible,
    short_repr,
    strip_nn,
)

# yaml module names -> classes taking (c1, c2, ...) from the channel bookkeeping
CHANNEL_BLOCKS: dict[str, type[nn.Module]] = {
    "Conv": common.Conv, "DWConv": blocks.DWConv, "Bottleneck": blocks.Bottleneck, "C2f": blocks.C2f,
    "C3": common.C3, "C3k2": blocks.C3k2, "SPPF": blocks.SPPF, "C2PSA": psa.C2PSA, "A2C2f": area.A2C2f,
}
REPEATED_BLOCKS = frozenset({"C2f", "C3", "C3k2", "C2PSA", "A2C2f"})  # take the repeat count as an argument
# their presence marks a YOLO11-or-later head (depthwise class branch), as in ultralytics
MODERN_BLOCKS = {"C3k2", "A2C2f"}
OTHER_BLOCKS: dict[str, type[nn.Module]] = {
    "Concat": common.Concat, "Detect": head.Detect, "Upsample": nn.Upsample,
    "BatchNorm2d": nn.BatchNorm2d, "Identity": nn.Identity,
}


def _c3k2_at_scale(args: list[Any], scale: str | None) -> list[Any]:
    """m/l/x: C3k inner blocks whatever the row says (args are c1, c2, n, c3k, ...)."""
    return [*args[:3], True, *args[4:]] if scale in {"m", "l", "x"} else args


def _a2c2f_at_scale(args: list[Any], scale: str | None) -> list[Any]:
    """l/x: the gamma-scaled residual and a 1.2-wide MLP appended after the row's own args."""
    return [*args, True, 1.2] if scale in {"l", "x"} else args


SCALE_RULES: dict[str, Callable[[list[Any], str | None], list[Any]]] = {
    "C3k2": _c3k2_at_scale, "A2C2f": _a2c2f_at_scale,
}


@dataclass(frozen=True)
class Scaling:
    """One scale of a definition: its letter (None without ``scales``) and its multipliers."""

    scale: str | None
    depth: float
    width: float
    max_channels: float


def _count(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def check_cfg(cfg: dict[str, Any], where: str) -> None:
    """The scalar keys of an anchor-free definition, checked before anything is built from them."""
    if not _count(cfg.get("nc"), 1, MAX_CLASSES):
        raise UserError(f"{where}: 'nc' must be a class count from 1 to {MAX_CLASSES}, not {short_repr(cfg.get('nc'))}")
    if not _count(cfg.get("reg_max", 16), 1, 64):
        raise UserError(f"{where}: 'reg_max' must be a bin count from 1 to 64, not {short_repr(cfg.get('reg_max'))}")
    if not isinstance(cfg.get("end2end", False), (bool, type(None))):
        raise UserError(f"{where}: 'end2end' must be true or false, not {short_repr(cfg.get('end2end'))}")
    if not _count(cfg.get("ch", 3), 1, 64):
        raise UserError(f"{where}: 'ch' must be an input channel count from 1 to 64, not {short_repr(cfg.get('ch'))}")
    scales = cfg.get("scales")
    if scales is not None:
        ok = isinstance(scales, dict) and scales and all(
            isinstance(k, str) and isinstance(v, list) and len(v) == 3 and all(is_number(x) and x > 0 for x in v)
            and v[0] <= 10 and v[1] <= 10 for k, v in scales.items())
        if not ok:
            raise UserError(f"{where}: 'scales' must map letters to [depth, width, max_channels], not {short_repr(scales)}")
    for key in ("depth_multiple", "width_multiple"):
        v = cfg.get(key, 1.0)
        if not (is_number(v) and 0 < v <= 10):
            raise UserError(f"{where}: {key!r} must be a number in (0, 10], not {short_repr(v)}")
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise UserError(f"{where}: {key!r} must be a list of [from, repeats, module, args] rows")
    if len(cfg["backbone"]) + len(cfg["head"]) > MAX_ROWS:
        raise UserError(f"{where}: more than {MAX_ROWS} rows")


def pick_scaling(cfg: dict[str, Any], scale: str | None, where: str) -> Scaling:
    """The multipliers for ``scale`` (the first of ``scales`` when None, as ultralytics does)."""
    scales = cfg.get("scales")
    if not scales:
        return Scaling(scale, float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0)), math.inf)
    scale = scale if scale is not None else next(iter(scales))
    if scale not in scales:
        raise UserError(f"{where}: no scale {scale!r}", f"it has {', '.join(map(str, scales))}")
    depth, width, max_channels = scales[scale]
    return Scaling(scale, float(depth), float(width), float(max_channels))


class AnchorFreeBuilder(RowBuilder):
    """parse_model's channel rules for the anchor-free families."""

    channel_blocks = CHANNEL_BLOCKS
    repeated = REPEATED_BLOCKS
    other_blocks = OTHER_BLOCKS

    def __init__(self, cfg: dict[str, Any], ch: int, scaling: Scaling, where: str) -> None:
        self.s = scaling
        self.nc = int(cfg["nc"])
        self.reg_max = int(cfg.get("reg_max", 16))
        self.end2end = bool(cfg.get("end2end"))
        self.legacy = True  # until a YOLO11-style block appears
        super().__init__(where, ch, scaling.depth, {"nc": self.nc})

    def width(self, c2: Any) -> int:
        if not (is_number(c2) and 0 < c2 <= MAX_CHANNELS):
            raise UserError(f"output channels must be a number from 1 to {MAX_CHANNELS}, not {short_repr(c2)}")
        return make_divisible(min(c2, self.s.max_channels) * self.s.width, 8)

    def channel_block(self, name: str, args: list[Any], n: int) -> tuple[list[Any], int]:
        args, n = super().channel_block(name, args, n)
        return (SCALE_RULES[name](args, self.s.scale) if name in SCALE_RULES else args), n

    def head(self, args: list[Any], chs: list[int]) -> nn.Module:
        nc = args[0] if args else self.nc
        return head.Detect(nc, self.reg_max, self.end2end, chs, legacy=self.legacy)

    def build(self, row: Row) -> tuple[nn.Module, int]:
        module, c2 = super().build(row)
        if strip_nn(row.name) in MODERN_BLOCKS:
            self.legacy = False
        return module, c2


def parse_model(
    cfg: dict[str, Any], ch: int, scaling: Scaling, where: str
) -> tuple[nn.Sequential, list[int], list[Row], list[int]]:
    """Layers (each with ``.i``, ``.f``, ``.type``), the indices kept for later rows, the rows,
    and each row's output channel count (the checkpoint loader sizes attention rows from it)."""
    builder = AnchorFreeBuilder(cfg, ch, scaling, where)
    layers, save, rows = assemble(builder, cfg, where)
    return layers, save, rows, builder.ch


def run_layers(layers: nn.Sequential, save: list[int], x: Tensor) -> Any:
    """Rows in order, each reading its ``from`` outputs; only outputs read later are kept."""
    y: list[Tensor | None] = []
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in save else None)
    return x
