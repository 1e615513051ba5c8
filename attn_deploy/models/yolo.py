"""YOLOv5 assembled from the yolov5 yaml format, attention rows included.

A yaml (or dict) has ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and
``backbone``/``head`` rows of ``[from, number, module, args]``. Module names resolve through
two explicit tables (the YOLOv5 blocks and the attention registry), never ``eval``; string
arguments go through ``ast.literal_eval``. Channel bookkeeping follows yolov5's
``parse_model``; attention rows keep their input's channel count.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from attn_deploy.errors import UserError, library_text, one_line
from attn_deploy.files import check_expansion, read_yaml
from attn_deploy.models import common
from attn_deploy.models.attention import AttentionSpec, attention_aliases, find_attention

# yaml module names -> classes; blocks that take (c1, c2, ...) from the channel bookkeeping
CHANNEL_BLOCKS = {"Conv": common.Conv, "Bottleneck": common.Bottleneck, "C3": common.C3,
                  "SPP": common.SPP, "SPPF": common.SPPF, "Focus": common.Focus}
REPEATED_BLOCKS = {"C3"}  # blocks that take the repeat count as an argument
OTHER_BLOCKS: dict[str, type[nn.Module]] = {
    "Concat": common.Concat, "Detect": common.Detect, "Upsample": nn.Upsample,
    "BatchNorm2d": nn.BatchNorm2d, "Identity": nn.Identity,
}
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "SiLU": nn.SiLU, "ReLU": nn.ReLU, "ReLU6": nn.ReLU6, "LeakyReLU": nn.LeakyReLU,
    "Hardswish": nn.Hardswish, "Mish": nn.Mish, "GELU": nn.GELU, "Identity": nn.Identity,
}


@dataclass
class Row:
    """One parsed yaml row, as the model and ``info`` need it."""

    index: int
    source: int | list[int]
    number: int
    name: str
    args: list[Any]


def make_divisible(x: float, divisor: int) -> int:
    return math.ceil(x / divisor) * divisor


def _strip_nn(name: str) -> str:
    for prefix in ("torch.nn.", "nn."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def parse_activation(text: str, where: str) -> Callable[[], nn.Module]:
    """``nn.LeakyReLU(0.1)`` -> a factory for that module; literals only, no eval."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        name = ast.unparse(call.func if isinstance(call, ast.Call) else call)
        args = [ast.literal_eval(a) for a in call.args] if isinstance(call, ast.Call) else []
        kwargs = {k.arg: ast.literal_eval(k.value) for k in getattr(call, "keywords", [])}
        cls = ACTIVATIONS[_strip_nn(name)]
    except (SyntaxError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{where}: unsupported activation {text!r}", f"one of {', '.join(ACTIVATIONS)}") from e
    kwargs.pop("inplace", None)
    return lambda: cls(*args, **kwargs)


def _resolve_arg(a: Any, names: dict[str, Any]) -> Any:
    if not isinstance(a, str):
        return a
    if a in names:
        return names[a]
    with contextlib.suppress(ValueError, SyntaxError):
        return ast.literal_eval(a)
    return a  # a plain string such as 'nearest'


def iter_rows(cfg: dict[str, Any], where: str) -> Iterator[Row]:
    try:
        rows = list(cfg["backbone"]) + list(cfg["head"])
    except (KeyError, TypeError) as e:
        raise UserError(f"{where}: a model yaml needs 'backbone' and 'head' lists") from e
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[2], str)):
            raise UserError(f"{where} row {i}: expected [from, number, module, args], got {row!r}")
        f, n, m, args = row
        if not isinstance(n, int) or not (isinstance(f, int) or (isinstance(f, list) and f and all(isinstance(j, int) for j in f))):
            raise UserError(f"{where} row {i} ({m}): 'from' must be an int or a list of ints and 'number' an int")
        yield Row(i, f, n, m, list(args) if isinstance(args, (list, tuple)) else [args])


def _unknown_module(name: str) -> UserError:
    known = [*CHANNEL_BLOCKS, *OTHER_BLOCKS, *(n for names in attention_aliases().values() for n in names)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see 'attn-deploy models' for attention names"
    return UserError(f"unknown module {_short(name)}", hint)


MAX_CLASSES = 100_000
MAX_ROWS = 1_000
MAX_CHANNELS = 65_536
MAX_REPEATS = 100  # a row's module count after depth_multiple (yolov5x: 12)
MAX_PARAMS = 2_000_000_000  # yolov5x has 86.7M; a model of 8 GB of float32 is nobody's


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_cfg(cfg: dict[str, Any], where: str) -> None:
    """The scalar keys of a model definition, checked before anything is built from them."""
    nc = cfg.get("nc")
    if not (isinstance(nc, int) and not isinstance(nc, bool) and 0 < nc <= MAX_CLASSES):
        raise UserError(f"{where}: 'nc' must be a class count from 1 to {MAX_CLASSES}, not {_short(nc)}")
    for key in ("depth_multiple", "width_multiple"):
        v = cfg.get(key, 1.0)
        if not (_number(v) and 0 < v <= 10):
            raise UserError(f"{where}: {key!r} must be a number in (0, 10], not {_short(v)}")
    a = cfg.get("anchors")
    grid = isinstance(a, list) and a and all(
        isinstance(r, list) and r and len(r) % 2 == 0 and all(_number(x) and x > 0 for x in r) for r in a)
    count = isinstance(a, int) and not isinstance(a, bool) and 0 < a <= 100
    if not (grid or count):
        raise UserError(f"{where}: 'anchors' must be rows of positive w,h pairs or an anchor count, not {_short(a)}")
    ch = cfg.get("ch", 3)
    if not (isinstance(ch, int) and not isinstance(ch, bool) and 0 < ch <= 64):
        raise UserError(f"{where}: 'ch' must be an input channel count from 1 to 64, not {_short(ch)}")
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise UserError(f"{where}: {key!r} must be a list of [from, number, module, args] rows")
    if len(cfg["backbone"]) + len(cfg["head"]) > MAX_ROWS:
        raise UserError(f"{where}: more than {MAX_ROWS} rows")


def _short(v: Any, n: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


class ModelBuilder:
    """Turns rows into modules, keeping yolov5's channel list ``ch``."""

    def __init__(self, cfg: dict[str, Any], ch: int, where: str) -> None:
        check_cfg(cfg, where)
        self.where = where
        self.params = 0
        self.nc = int(cfg["nc"])
        anchors = cfg["anchors"]
        self.na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
        self.no = self.na * (self.nc + 5)
        self.gd, self.gw = float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0))
        self.names = {"nc": self.nc, "anchors": anchors}
        self.ch: list[int] = [ch]

    def channels(self, f: int | list[int]) -> list[int]:
        try:
            return [self.ch[j] for j in ([f] if isinstance(f, int) else f)]
        except IndexError as e:
            raise UserError(f"'from' {f} refers to a layer that does not exist yet") from e

    def build(self, row: Row) -> tuple[nn.Module, int]:
        """The module for one row and its output channel count."""
        where = f"{self.where} row {row.index} ({row.name[:40]})"
        args = [_resolve_arg(a, self.names) for a in row.args]
        n = max(round(row.number * self.gd), 1) if row.number > 1 else row.number
        if not 0 < n <= MAX_REPEATS:
            raise UserError(f"{where}: 'number' {row.number} gives {n} modules (1 to {MAX_REPEATS})")
        try:
            with torch.device("meta"):  # sized first, without memory: a row cannot ask for terabytes
                size = sum(p.numel() for p in self._module(row, args, n, where)[0].parameters())
            self.params += size
            if self.params > MAX_PARAMS:
                raise UserError(f"the model passes {MAX_PARAMS / 1e9:g}B parameters here ({size:,} in this row)")
            return self._module(row, args, n, where)
        except UserError as e:
            raise UserError(e.message if e.message.startswith(self.where) else f"{where}: {e.message}", e.hint) from e
        except (TypeError, ValueError, IndexError, RuntimeError, OverflowError, ZeroDivisionError, AttributeError) as e:
            raise UserError(f"{where}: cannot build with args {_short(row.args)}: {one_line(str(e), 100)}") from e

    def _module(self, row: Row, args: list[Any], n: int, where: str) -> tuple[nn.Module, int]:
        args, name = copy.deepcopy(args), _strip_nn(row.name)
        if name in CHANNEL_BLOCKS:
            return self._channel_block(name, row, args, n)
        if (spec := find_attention(row.name)) is not None:
            return self._attention(spec, row, args, n, where)
        if name in OTHER_BLOCKS:
            return self._other(name, row, args, n)
        raise _unknown_module(row.name)

    def _repeat(self, make: Callable[[], nn.Module], n: int) -> nn.Module:
        return nn.Sequential(*(make() for _ in range(n))) if n > 1 else make()

    def _channel_block(self, name: str, row: Row, args: list[Any], n: int) -> tuple[nn.Module, int]:
        c1, c2 = self.channels(row.source)[0], args[0]
        if not (_number(c2) and 0 < c2 <= MAX_CHANNELS):
            raise UserError(f"output channels must be a number from 1 to {MAX_CHANNELS}, not {_short(c2)}")
        if c2 != self.no:
            c2 = make_divisible(c2 * self.gw, 8)
        args = [c1, c2, *args[1:]]
        if name in REPEATED_BLOCKS:
            args.insert(2, n)
            n = 1
        cls = CHANNEL_BLOCKS[name]
        return self._repeat(lambda: cls(*args), n), c2

    def _attention(self, spec: AttentionSpec, row: Row, args: list[Any], n: int, where: str) -> tuple[nn.Module, int]:
        c1 = self.channels(row.source)[0]
        kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        if args and isinstance(args[0], (int, float)) and not isinstance(args[0], bool):
            c2 = args.pop(0)
            if c2 != c1 and make_divisible(c2 * self.gw, 8) != c1:
                raise UserError(
                    f"{where}: channel argument {c2} (x width {self.gw:g} = {make_divisible(c2 * self.gw, 8)}) "
                    f"does not match its input's {c1} channels; attention blocks keep the channel count"
                )
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
            args = [*args[:2], chs] if len(args) >= 2 else [self.nc, self.names["anchors"], chs]
            if isinstance(args[1], int):  # a number of anchors: placeholders, autoanchor sets them
                args[1] = [list(range(args[1] * 2))] * len(chs)
        cls = OTHER_BLOCKS[name]
        return self._repeat(lambda: cls(*args), n), c2


def parse_model(
    cfg: dict[str, Any], ch: int, where: str
) -> tuple[nn.Sequential, list[int], list[Row], list[int]]:
    """yolov5's ``parse_model`` without eval: layers, kept indices, rows, output channels."""
    builder = ModelBuilder(cfg, ch, where)
    layers, save, rows = [], [], []
    act = cfg.get("activation")
    token = common.DEFAULT_ACT.set(parse_activation(act, where)) if act else None
    try:
        for row in iter_rows(cfg, where):
            module, c2 = builder.build(row)
            module.i, module.f, module.type = row.index, row.source, row.name  # type: ignore[assignment]
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
    return nn.Sequential(*layers), sorted(set(save)), rows, builder.ch


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
            with torch.no_grad():
                self.eval()(torch.zeros(1, ch, s, s))
        except (RuntimeError, ValueError, IndexError, TypeError) as e:  # rows that do not fit together
            raise UserError(f"{where}: the model does not run on a {s}x{s} image: {library_text(e, 120)}",
                            detail=str(e)) from e
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
