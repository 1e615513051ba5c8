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

import copy
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attn_deploy.errors import UserError, one_line
from attn_deploy.models import common
from attn_deploy.models.anchorfree import area, blocks, head, psa
from attn_deploy.models.attention import AttentionSpec, attention_aliases, find_attention
from attn_deploy.models.yolo import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_PARAMS,
    MAX_REPEATS,
    MAX_ROWS,
    Row,
    _resolve_arg,
    _short,
    _strip_nn,
    iter_rows,
    make_divisible,
    parse_activation,
)

# yaml module names -> classes taking (c1, c2, ...) from the channel bookkeeping
CHANNEL_BLOCKS: dict[str, type[nn.Module]] = {
    "Conv": common.Conv, "DWConv": blocks.DWConv, "Bottleneck": blocks.Bottleneck, "C2f": blocks.C2f,
    "C3": common.C3, "C3k2": blocks.C3k2, "SPPF": blocks.SPPF, "C2PSA": psa.C2PSA, "A2C2f": area.A2C2f,
}
REPEATED_BLOCKS = {"C2f", "C3", "C3k2", "C2PSA", "A2C2f"}  # take the repeat count as an argument
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


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def check_cfg(cfg: dict[str, Any], where: str) -> None:
    """The scalar keys of an anchor-free definition, checked before anything is built from them."""
    if not _count(cfg.get("nc"), 1, MAX_CLASSES):
        raise UserError(f"{where}: 'nc' must be a class count from 1 to {MAX_CLASSES}, not {_short(cfg.get('nc'))}")
    if not _count(cfg.get("reg_max", 16), 1, 64):
        raise UserError(f"{where}: 'reg_max' must be a bin count from 1 to 64, not {_short(cfg.get('reg_max'))}")
    if not isinstance(cfg.get("end2end", False), (bool, type(None))):
        raise UserError(f"{where}: 'end2end' must be true or false, not {_short(cfg.get('end2end'))}")
    if not _count(cfg.get("ch", 3), 1, 64):
        raise UserError(f"{where}: 'ch' must be an input channel count from 1 to 64, not {_short(cfg.get('ch'))}")
    scales = cfg.get("scales")
    if scales is not None:
        ok = isinstance(scales, dict) and scales and all(
            isinstance(k, str) and isinstance(v, list) and len(v) == 3 and all(_number(x) and x > 0 for x in v)
            and v[0] <= 10 and v[1] <= 10 for k, v in scales.items())
        if not ok:
            raise UserError(f"{where}: 'scales' must map letters to [depth, width, max_channels], not {_short(scales)}")
    for key in ("depth_multiple", "width_multiple"):
        v = cfg.get(key, 1.0)
        if not (_number(v) and 0 < v <= 10):
            raise UserError(f"{where}: {key!r} must be a number in (0, 10], not {_short(v)}")
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


def _unknown_module(name: str) -> UserError:
    known = [*CHANNEL_BLOCKS, *OTHER_BLOCKS, *(n for names in attention_aliases().values() for n in names)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see 'attn-deploy models' for attention names"
    return UserError(f"unknown module {_short(name)}", hint)


class AnchorFreeBuilder:
    """Turns rows into modules, keeping parse_model's channel list ``ch``."""

    def __init__(self, cfg: dict[str, Any], ch: int, scaling: Scaling, where: str) -> None:
        self.where, self.s, self.params = where, scaling, 0
        self.nc = int(cfg["nc"])
        self.reg_max = int(cfg.get("reg_max", 16))
        self.end2end = bool(cfg.get("end2end"))
        self.names = {"nc": self.nc}
        self.legacy = True  # until a YOLO11-style block appears
        self.ch: list[int] = [ch]
        self.shadow: list[nn.Module] = []  # the meta-device twin of every row, for shape-only runs

    def channels(self, f: int | list[int]) -> list[int]:
        try:
            return [self.ch[j] for j in ([f] if isinstance(f, int) else f)]
        except IndexError as e:
            raise UserError(f"'from' {f} refers to a layer that does not exist yet") from e

    def width(self, c2: Any) -> int:
        if not (_number(c2) and 0 < c2 <= MAX_CHANNELS):
            raise UserError(f"output channels must be a number from 1 to {MAX_CHANNELS}, not {_short(c2)}")
        return make_divisible(min(c2, self.s.max_channels) * self.s.width, 8)

    def build(self, row: Row) -> tuple[nn.Module, int]:
        """The module for one row and its output channel count, sized on the meta device first."""
        where = f"{self.where} row {row.index} ({row.name[:40]})"
        args = [_resolve_arg(a, self.names) for a in row.args]
        n = max(round(row.number * self.s.depth), 1) if row.number > 1 else row.number
        if not 0 < n <= MAX_REPEATS:
            raise UserError(f"{where}: 'repeats' {row.number} gives {n} modules (1 to {MAX_REPEATS})")
        try:
            with torch.device("meta"):
                twin = self._module(row, args, n, where)[0]
            size = sum(p.numel() for p in twin.parameters())
            self.params += size
            if self.params > MAX_PARAMS:
                raise UserError(f"the model passes {MAX_PARAMS / 1e9:g}B parameters here ({size:,} in this row)")
            module, c2 = self._module(row, args, n, where)
        except UserError as e:
            raise UserError(e.message if e.message.startswith(self.where) else f"{where}: {e.message}", e.hint) from e
        except (TypeError, ValueError, IndexError, RuntimeError, OverflowError, ZeroDivisionError, AttributeError) as e:
            raise UserError(f"{where}: cannot build with args {_short(row.args)}: {one_line(str(e), 100)}") from e
        if _strip_nn(row.name) in MODERN_BLOCKS:
            self.legacy = False
        self.shadow.append(twin)
        return module, c2

    def _module(self, row: Row, args: list[Any], n: int, where: str) -> tuple[nn.Module, int]:
        args, name = copy.deepcopy(args), _strip_nn(row.name)
        if name in CHANNEL_BLOCKS:
            return self._channel_block(name, row, args, n)
        if (spec := find_attention(row.name)) is not None:
            return self._attention(spec, row, args, n, where)
        if name in OTHER_BLOCKS:
            return self._other(name, row, args, n)
        raise _unknown_module(row.name)

    @staticmethod
    def _repeat(make: Callable[[], nn.Module], n: int) -> nn.Module:
        return nn.Sequential(*(make() for _ in range(n))) if n > 1 else make()

    def _channel_block(self, name: str, row: Row, args: list[Any], n: int) -> tuple[nn.Module, int]:
        c1, c2 = self.channels(row.source)[0], self.width(args[0] if args else None)
        args = [c1, c2, *args[1:]]
        if name in REPEATED_BLOCKS:
            args.insert(2, n)
            n = 1
        if name in SCALE_RULES:
            args = SCALE_RULES[name](args, self.s.scale)
        cls = CHANNEL_BLOCKS[name]
        return self._repeat(lambda: cls(*args), n), c2

    def _attention(self, spec: AttentionSpec, row: Row, args: list[Any], n: int, where: str) -> tuple[nn.Module, int]:
        """An attention-registry row: channels kept; a channel argument must agree after scaling."""
        c1 = self.channels(row.source)[0]
        kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        if args and _number(args[0]):
            c2 = args.pop(0)
            if c2 != c1 and self.width(c2) != c1:
                raise UserError(f"{where}: channel argument {c2} (scaled: {self.width(c2)}) does not match its "
                                f"input's {c1} channels; attention blocks keep the channel count")
        names = spec.args_for(row.name)
        if len(args) > len(names):
            raise UserError(f"{where}: too many arguments; after the channels it takes {[a for a in names if a]}")
        kwargs.update({k: v for k, v in zip(names, args) if k is not None})
        return self._repeat(lambda: spec.cls(c1, **kwargs), n), c1

    def _other(self, name: str, row: Row, args: list[Any], n: int) -> tuple[nn.Module, int]:
        chs = self.channels(row.source)
        c2 = chs[0]
        if name == "Concat":
            c2 = sum(chs)
        elif name == "BatchNorm2d":
            args = [chs[0]]
        elif name == "Detect":
            nc = args[0] if args else self.nc
            return head.Detect(nc, self.reg_max, self.end2end, chs, legacy=self.legacy), c2
        cls = OTHER_BLOCKS[name]
        return self._repeat(lambda: cls(*args), n), c2


def parse_model(
    cfg: dict[str, Any], ch: int, scaling: Scaling, where: str
) -> tuple[nn.Sequential, list[int], list[Row], nn.Sequential]:
    """Layers (each with ``.i``, ``.f``, ``.type``), the indices kept for later rows, the rows,
    and the same layers on the meta device (weightless: a trial forward there costs nothing)."""
    builder = AnchorFreeBuilder(cfg, ch, scaling, where)
    layers, save, rows = [], [], []
    act = cfg.get("activation")
    token = common.DEFAULT_ACT.set(parse_activation(act, where)) if act else None
    try:
        for row in iter_rows(cfg, where):
            module, c2 = builder.build(row)
            for m in (module, builder.shadow[-1]):
                m.i, m.f, m.type = row.index, row.source, row.name  # type: ignore[assignment]
            sources = [row.source] if isinstance(row.source, int) else row.source
            save.extend(j % row.index for j in sources if j != -1)
            layers.append(module)
            rows.append(row)
            if row.index == 0:
                builder.ch = []
            builder.ch.append(c2)
    finally:
        if token is not None:
            common.DEFAULT_ACT.reset(token)
    return nn.Sequential(*layers), sorted(set(save)), rows, nn.Sequential(*builder.shadow)


def run_layers(layers: nn.Sequential, save: list[int], x: Tensor) -> Any:
    """Rows in order, each reading its ``from`` outputs; only outputs read later are kept."""
    y: list[Tensor | None] = []
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in save else None)
    return x
