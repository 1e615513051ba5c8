"""The family-neutral part of reading a YOLO yaml: rows, names, limits, and a builder base.

Every family (YOLOv5's anchor-based head, ultralytics' anchor-free ones) writes its model as
``[from, number, module, args]`` rows. What they share lives here: rows are checked and parsed
without ``eval`` (literals through ``ast.literal_eval``), module names resolve through the
family's tables and the attention registry, each row is sized on PyTorch's meta device before
any memory is taken, and failures are one-line user errors naming the file and the row. A
family subclass says how widths scale (``width``), how its channel blocks take their
arguments (``channel_block``) and how its head is made (``head``).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import difflib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attn_deploy.blocks import UserBlock, find_block
from attn_deploy.errors import UserError, library_text, one_line
from attn_deploy.models import common
from attn_deploy.models.attention import AttentionSpec, attention_aliases, find_attention

MAX_CLASSES = 100_000
MAX_ROWS = 1_000
MAX_CHANNELS = 65_536
MAX_REPEATS = 100  # a row's module count after the depth multiple (yolov5x: 12)
MAX_PARAMS = 2_000_000_000  # yolov5x has 86.7M; a model of 8 GB of float32 is nobody's

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "SiLU": nn.SiLU, "ReLU": nn.ReLU, "ReLU6": nn.ReLU6, "LeakyReLU": nn.LeakyReLU,
    "Hardswish": nn.Hardswish, "Mish": nn.Mish, "GELU": nn.GELU, "Identity": nn.Identity,
}
BUILD_ERRORS = (TypeError, ValueError, IndexError, RuntimeError, OverflowError, ZeroDivisionError, AttributeError)


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


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def short_repr(v: Any, n: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def strip_nn(name: str) -> str:
    for prefix in ("torch.nn.", "nn."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def parse_activation(text: str, where: str) -> Callable[[], nn.Module]:
    """``nn.LeakyReLU(0.1)`` -> a factory for that module; literals only, no eval."""
    try:
        call = ast.parse(str(text).strip(), mode="eval").body
        name = ast.unparse(call.func if isinstance(call, ast.Call) else call)
        args = [ast.literal_eval(a) for a in call.args] if isinstance(call, ast.Call) else []
        kwargs = {k.arg: ast.literal_eval(k.value) for k in getattr(call, "keywords", [])}
        cls = ACTIVATIONS[strip_nn(name)]
    except (SyntaxError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UserError(f"{where}: unsupported activation {short_repr(text)}", f"one of {', '.join(ACTIVATIONS)}") from e
    kwargs.pop("inplace", None)
    return lambda: cls(*args, **kwargs)


def resolve_arg(a: Any, names: dict[str, Any]) -> Any:
    if not isinstance(a, str):
        return a
    if a in names:
        return names[a]
    with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
        return ast.literal_eval(a)
    return a  # a plain string such as 'nearest'


def iter_rows(cfg: dict[str, Any], where: str) -> Iterator[Row]:
    try:
        rows = list(cfg["backbone"]) + list(cfg["head"])
    except (KeyError, TypeError) as e:
        raise UserError(f"{where}: a model yaml needs 'backbone' and 'head' lists") from e
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and isinstance(row[2], str)):
            raise UserError(f"{where} row {i}: expected [from, number, module, args], got {short_repr(row)}")
        f, n, m, args = row
        if not isinstance(n, int) or not (isinstance(f, int) or (isinstance(f, list) and f and all(isinstance(j, int) for j in f))):
            raise UserError(f"{where} row {i} ({m[:40]}): 'from' must be an int or a list of ints and 'number' an int")
        yield Row(i, f, n, m, list(args) if isinstance(args, (list, tuple)) else [args])


class RowBuilder:
    """Turns rows into modules, keeping parse_model's channel list ``ch``.

    Subclasses set ``channel_blocks`` (classes taking ``(c1, c2, ...)``), ``repeated`` (those
    taking the repeat count as their third argument), ``other_blocks``, and define ``width``,
    ``channel_block`` and ``head``. ``twin`` is the last row's meta-device copy.
    """

    channel_blocks: dict[str, type[nn.Module]] = {}
    repeated: frozenset[str] = frozenset()
    other_blocks: dict[str, type[nn.Module]] = {}

    def __init__(self, where: str, ch: int, depth: float, names: dict[str, Any]) -> None:
        self.where, self.depth, self.names = where, depth, names
        self.params = 0
        self.ch: list[int] = [ch]
        self.twin: nn.Module | None = None

    def width(self, c2: Any) -> int:
        """A row's output channels after the family's width rule."""
        raise NotImplementedError

    def channel_block(self, name: str, args: list[Any], n: int) -> tuple[list[Any], int]:
        """The constructor arguments of a channel block (``args`` already hold c1, c2) and how
        many copies of it to chain; the default passes the repeat count to ``repeated``."""
        if name in self.repeated:
            return [*args[:2], n, *args[2:]], 1
        return args, n

    def head(self, args: list[Any], chs: list[int]) -> nn.Module:
        raise NotImplementedError

    def channels(self, f: int | list[int]) -> list[int]:
        try:
            return [self.ch[j] for j in ([f] if isinstance(f, int) else f)]
        except IndexError as e:
            raise UserError(f"'from' {f} refers to a layer that does not exist yet") from e

    def build(self, row: Row) -> tuple[nn.Module, int]:
        """The module for one row and its output channel count, sized on the meta device first."""
        where = f"{self.where} row {row.index} ({row.name[:40]})"
        args = [resolve_arg(a, self.names) for a in row.args]
        n = max(round(row.number * self.depth), 1) if row.number > 1 else row.number
        if not 0 < n <= MAX_REPEATS:
            raise UserError(f"{where}: 'number' {row.number} gives {n} modules (1 to {MAX_REPEATS})")
        try:
            with torch.device("meta"):  # a row cannot ask for terabytes: sized before memory is taken
                self.twin = self.module(row, args, n, where)[0]
            size = sum(p.numel() for p in self.twin.parameters())
            self.params += size
            if self.params > MAX_PARAMS:
                raise UserError(f"the model passes {MAX_PARAMS / 1e9:g}B parameters here ({size:,} in this row)")
            return self.module(row, args, n, where)
        except UserError as e:
            raise UserError(e.message if e.message.startswith(self.where) else f"{where}: {e.message}", e.hint) from e
        except BUILD_ERRORS as e:
            raise UserError(f"{where}: cannot build with args {short_repr(row.args)}: {one_line(str(e), 100)}") from e

    def module(self, row: Row, args: list[Any], n: int, where: str) -> tuple[nn.Module, int]:
        args, name = copy.deepcopy(args), strip_nn(row.name)
        if name in self.channel_blocks:
            c1, c2 = self.channels(row.source)[0], self.width(args[0] if args else None)
            made, n = self.channel_block(name, [c1, c2, *args[1:]], n)
            cls = self.channel_blocks[name]
            return self._repeat(lambda: cls(*made), n), c2
        if (spec := find_attention(row.name)) is not None:
            return self._attention(spec, row, args, n, where)
        if name in self.other_blocks:
            return self._other(name, row, args, n)
        if (user := find_block(row.name)) is not None:
            return self._user(user, row, args, n)
        raise self.unknown_module(row.name)

    @staticmethod
    def _repeat(make: Callable[[], nn.Module], n: int) -> nn.Module:
        return nn.Sequential(*(make() for _ in range(n))) if n > 1 else make()

    def _attention(self, spec: AttentionSpec, row: Row, args: list[Any], n: int, where: str) -> tuple[nn.Module, int]:
        """An attention-registry row: channels kept; a channel argument must agree after scaling."""
        c1 = self.channels(row.source)[0]
        kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        if args and is_number(args[0]):
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
        if name == "Detect":
            return self.head(args, chs), chs[0]
        c2 = sum(chs) if name == "Concat" else chs[0]
        if name == "BatchNorm2d":
            args = [chs[0]]
        cls = self.other_blocks[name]
        return self._repeat(lambda: cls(*args), n), c2

    def _user(self, user: UserBlock, row: Row, args: list[Any], n: int) -> tuple[nn.Module, int]:
        """A block the user registered: their channel rule, their class (``attn_deploy/blocks.py``)."""
        made, c2, n = user.constructor_args(self.channels(row.source), args, n, self.width)
        if not 0 < c2 <= MAX_CHANNELS:
            raise UserError(f"block {user.label()}: its channel rule gives {c2} output channels")

        def make() -> nn.Module:
            try:
                module = user.cls(*made)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - the user's constructor may raise anything: named
                if torch.get_default_device().type == "meta":  # code that needs real tensors to size itself
                    with torch.device("cpu"):
                        return make()
                raise UserError(f"block {user.label()}: {user.cls.__name__}{short_repr(tuple(made), 60)} failed: "
                                f"{type(e).__name__}: {one_line(str(e), 80)}") from e
            if not isinstance(module, nn.Module):
                raise UserError(f"block {user.label()}: constructing it did not give an nn.Module")
            return module

        module = self._repeat(make, n)
        module.user_block = user.name  # type: ignore[assignment]
        return module, c2

    def unknown_module(self, name: str) -> UserError:
        known = [*self.channel_blocks, *self.other_blocks, *(n for names in attention_aliases().values() for n in names)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = (f"did you mean {', '.join(close)}?" if close else
                "see 'attn-deploy models'; a block of your own: --blocks FILE.py (see 'attn-deploy blocks --help')")
        return UserError(f"unknown module {short_repr(name)}", hint)


def assemble(builder: RowBuilder, cfg: dict[str, Any], where: str,
             on_row: Callable[[Row, nn.Module], None] | None = None) -> tuple[nn.Sequential, list[int], list[Row]]:
    """Every row built in order (each module with ``.i``, ``.f``, ``.type``), the indices of
    outputs read by later rows, and the rows; ``on_row`` sees each row and its module."""
    layers, save, rows = [], [], []
    act = cfg.get("activation")
    token = common.DEFAULT_ACT.set(parse_activation(act, where)) if act else None
    try:
        for row in iter_rows(cfg, where):
            module, c2 = builder.build(row)
            module.i, module.f, module.type = row.index, row.source, row.name  # type: ignore[assignment]
            if on_row is not None:
                on_row(row, module)
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
    return nn.Sequential(*layers), sorted(set(save)), rows


def trial_failure(where: str, s: int, e: BaseException, watch: LayerWatch) -> None:
    """The model's trial run on an s x s image failed: raises a user error naming the culprit
    when rows do not fit together or a user block fails; returns for anything else (ours: a
    bug, which the caller re-raises)."""
    if isinstance(e, UserError):
        return
    why = watch.blame(e, f"on a {s}x{s} image")
    if why is not None:
        raise UserError(f"{where}: {why}", detail=str(e)) from e
    if isinstance(e, (RuntimeError, ValueError, IndexError, TypeError, NotImplementedError)):
        raise UserError(f"{where}: the model does not run on a {s}x{s} image: {library_text(e, 120)}",
                        detail=str(e)) from e


class LayerWatch:
    """Hooks on every layer while a model runs: which layer is running (to say who failed),
    and the input and output shapes of the user's blocks (``module.user_block``)."""

    def __init__(self, layers: nn.Module) -> None:
        self.layers = list(layers)
        self.running: list[int] = []
        self.shapes: dict[int, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {
            i: [] for i, m in enumerate(self.layers) if getattr(m, "user_block", None)}
        self._hooks: list[Any] = []

    def __enter__(self) -> LayerWatch:
        for i, m in enumerate(self.layers):
            self._hooks.append(m.register_forward_pre_hook(lambda m, a, i=i: self.running.append(i)))
            self._hooks.append(m.register_forward_hook(lambda m, a, out, i=i: self._leave(i, a, out)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._hooks:
            h.remove()

    def _leave(self, i: int, args: Any, out: Any) -> None:
        self.running.pop()
        if i in self.shapes:
            x = args[0] if isinstance(args[0], torch.Tensor) else args[0][0]
            self.shapes[i].append((tuple(x.shape), tuple(out.shape) if isinstance(out, torch.Tensor) else ()))

    def label(self, i: int) -> str:
        m = self.layers[i]
        user = find_block(str(getattr(m, "type", ""))) if getattr(m, "user_block", None) else None
        return f"layer {i} ({user.name}, from {user.origin})" if user else f"layer {i} ({getattr(m, 'type', '?')})"

    def blame(self, e: BaseException, what: str) -> str | None:
        """One line for a failed run of a model with user blocks: the failing layer, and when
        it is not theirs, what the user blocks before it gave; None without user blocks."""
        if not self.shapes or not self.running:
            return None
        k = self.running[-1]
        text = f"failed {what}: {type(e).__name__}: {one_line(str(e), 80)}"
        if k in self.shapes:
            return f"{self.label(k)}: forward {text}"
        before = "; ".join(f"{self.label(i)} gave {'x'.join(map(str, s[-1][1][1:]))} from {'x'.join(map(str, s[-1][0][1:]))}"
                           for i, s in self.shapes.items() if i < k and s)
        return f"{before}, then {self.label(k)} {text}" if before else None
