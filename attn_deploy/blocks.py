"""Users' own blocks: module classes we do not ship, registered from the user's code.

A fork's checkpoint names blocks outside our registry (MobileNetV3 and Ghost backbones, MLCA,
BiFPN ...). The user has their source; they bring it as a Python file (``--blocks FILE.py``)
or an installed package (an ``attn_deploy.blocks`` entry point), and register each class::

    from attn_deploy.blocks import block

    @block("MobileNet_Block", "models.common.MobileNet_Block", rule="conv")
    class MobileNetBlock(nn.Module): ...

That file is the user's own code and runs when it is imported, as any Python they run. The
checkpoint's pickle still never runs: its records of these classes are rebuilt with the
registered class from the yaml row and filled from the tensors (``models/checkpoint.py``).

Names: a plain name is what yaml rows write (``MobileNet_Block``); a dotted one is the path
the pickle names (``models.common.MobileNet_Block``), which lets a checkpoint hold records
of it outside the usual model namespaces, and whose last part is a yaml name as well.

The channel rule says how a yaml row's arguments become the constructor's, as the forks'
``parse_model`` branches do (``width`` applies the family's width multiple and rounding):

- ``conv``: the Conv branch: ``(c1, width(args[0]), *args[1:])``, output ``width(args[0])``;
- ``csp``: the C3/C2f branch: as ``conv`` with the repeat count inserted third;
- ``attention``: channels kept; a leading channel count (checked after scaling) becomes c1;
- ``keep``: channels kept, ``(c1, *args)``; ``plain``: channels kept, ``(*args)``;
- ``concat``: ``(*args)``, output the sum of the inputs' channels;
- or a function ``rule(channels, args, width) -> (constructor_args, out_channels)``, where
  ``channels`` lists the input channel counts of the row's ``from``.

Except for ``csp``, a row's repeat count chains that many copies, as ``parse_model`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attn_deploy.errors import UserError, one_line

ENTRY_POINTS = "attn_deploy.blocks"
RULES = ("conv", "csp", "attention", "keep", "plain", "concat")


class BlockError(UserError):
    """A block file or registration that cannot be used; the message names file and block."""


@dataclass(eq=False)  # one registration is one object: compared and hashed by identity
class UserBlock:
    """One registered class: its names, channel rule, and where it came from."""

    cls: type[nn.Module]
    names: tuple[str, ...]
    rule: Any
    origin: str
    example: tuple[Any, ...] = ()
    example_channels: int = 32

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def yaml_names(self) -> set[str]:
        return {n.rsplit(".", 1)[-1] for n in self.names}

    @property
    def pickle_names(self) -> set[str]:
        return {n for n in self.names if "." in n}

    @property
    def rule_name(self) -> str:
        return self.rule if isinstance(self.rule, str) else f"{getattr(self.rule, '__name__', 'function')}()"

    def label(self) -> str:
        return f"{self.name} ({self.origin})"

    def constructor_args(self, channels: list[int], args: list[Any], n: int,
                         width: Callable[[Any], int]) -> tuple[list[Any], int, int]:
        """(constructor arguments, output channels, copies to chain) for one yaml row."""
        c1 = channels[0]
        rule = self.rule
        if rule in ("conv", "csp"):
            if not args:
                raise BlockError(f"block {self.name}: rule {rule!r} needs the output channels as the row's first argument")
            c2 = width(args[0])
            return ([c1, c2, n, *args[1:]], c2, 1) if rule == "csp" else ([c1, c2, *args[1:]], c2, n)
        if rule == "attention":
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                if args[0] != c1 and width(args[0]) != c1:
                    raise BlockError(f"block {self.name}: channel argument {args[0]} does not match its input's {c1} "
                                     "channels (rule 'attention' keeps them)")
                args = args[1:]
            return [c1, *args], c1, n
        if rule == "keep":
            return [c1, *args], c1, n
        if rule == "plain":
            return list(args), c1, n
        if rule == "concat":
            return list(args), sum(channels), n
        try:
            out = rule(list(channels), list(args), width)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's function: any failure is theirs, named
            raise BlockError(f"block {self.name}: its channel rule failed: {type(e).__name__}: {one_line(str(e), 80)}") from e
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], (list, tuple))
                and isinstance(out[1], int) and not isinstance(out[1], bool) and out[1] > 0):
            raise BlockError(f"block {self.name}: its channel rule returned {one_line(repr(out), 60)}, "
                             "not (constructor_args, out_channels)")
        return list(out[0]), out[1], n


@dataclass
class _Registry:
    blocks: dict[str, UserBlock] = field(default_factory=dict)  # every name (yaml and pickle) -> block
    files: dict[Path, tuple[str, list[UserBlock]]] = field(default_factory=dict)  # path -> (content hash, blocks)
    entry_points_loaded: bool = False
    loading: list[UserBlock] | None = None  # what the file being imported registers
    origin: str = ""


_REG = _Registry()


def block(*names: str, rule: Any = "conv", example: tuple[Any, ...] | list[Any] = (),
          example_channels: int = 32) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register an ``nn.Module`` under ``names`` (default: its class name)
    with a channel rule (see the module's text). ``example`` is a yaml row's arguments and
    ``example_channels`` its input channels, for ``attn-deploy blocks`` to build it alone."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        label = getattr(cls, "__name__", repr(cls))
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise BlockError(f"block {one_line(str(label), 40)}: @block decorates torch.nn.Module classes; this is "
                             f"{type(cls).__name__}")
        _check_rule(label, rule)
        given = names or (cls.__name__,)
        bad = [n for n in given if not (isinstance(n, str) and n and all(p.isidentifier() for p in n.split(".")))]
        if bad:
            raise BlockError(f"block {label}: {one_line(repr(bad[0]), 40)} is not a class name or dotted module path")
        if not (isinstance(example_channels, int) and 0 < example_channels <= 4096):
            raise BlockError(f"block {label}: example_channels must be a channel count, not {example_channels!r}")
        entry = UserBlock(cls, tuple(given), rule, _REG.origin or cls.__module__, tuple(example), example_channels)
        _add(entry)
        if _REG.loading is not None:
            _REG.loading.append(entry)
        return cls

    return wrap


def _check_rule(label: str, rule: Any) -> None:
    if isinstance(rule, str):
        if rule not in RULES:
            raise BlockError(f"block {label}: unknown channel rule {one_line(repr(rule), 30)}",
                             f"one of {', '.join(RULES)}, or a function (channels, args, width)")
        return
    if not callable(rule):
        raise BlockError(f"block {label}: the channel rule must be a name ({', '.join(RULES)}) or a function, "
                         f"not {type(rule).__name__}")
    try:
        inspect.signature(rule).bind([1], [], lambda c: c)
    except (TypeError, ValueError) as e:
        raise BlockError(f"block {label}: a channel rule function takes (channels, args, width); "
                         f"{getattr(rule, '__name__', 'this one')} does not ({one_line(str(e), 60)})") from None


def _add(entry: UserBlock) -> None:
    for name in {*entry.names, *entry.yaml_names}:
        other = _REG.blocks.get(name)
        if other is not None and other is not entry:
            raise BlockError(f"block {entry.cls.__name__}: the name {name!r} is already registered by "
                             f"{other.cls.__name__} ({other.origin})")
    for name in {*entry.names, *entry.yaml_names}:
        _REG.blocks[name] = entry


def find_block(name: str) -> UserBlock | None:
    """The user block a yaml row or a pickle names, if any."""
    return _REG.blocks.get(name)


def registered() -> list[UserBlock]:
    """Every registered block, once each, in registration order."""
    return list(dict.fromkeys(_REG.blocks.values()))


def pickle_names() -> frozenset[str]:
    return frozenset(n for b in registered() for n in b.pickle_names)


def clear() -> None:
    """Forget every registration (tests; a new process starts empty anyway)."""
    global _REG
    _REG = _Registry()


def load_files(paths: list[str | Path] | tuple[str | Path, ...]) -> list[UserBlock]:
    """Import each block file (once per content) and return what they register."""
    out: list[UserBlock] = []
    for p in paths:
        out += load_file(p)
    return out


def load_file(path: str | Path) -> list[UserBlock]:
    """Import one block file, the user's own code; a broken file is one line naming it."""
    p = Path(path)
    if p.suffix != ".py":
        raise BlockError(f"block file {p} is not a Python file (.py)")
    try:
        source = p.read_bytes()
    except FileNotFoundError:
        raise BlockError(f"block file not found: {p}") from None
    except OSError as e:
        raise BlockError(f"cannot read block file {p}: {e.strerror or type(e).__name__}") from None
    key, digest = p.resolve(), hashlib.sha256(source).hexdigest()
    if key in _REG.files:
        old_digest, old = _REG.files[key]
        if old_digest == digest:
            return old
        _forget(old)
    with _registering(str(p)) as found:
        _import(p, source, digest)
    if not found:
        raise BlockError(f"{p} registers no blocks", "decorate its nn.Module classes with @block(...) from attn_deploy.blocks")
    _REG.files[key] = (digest, found)
    return found


@contextlib.contextmanager
def _registering(origin: str) -> Iterator[list[UserBlock]]:
    found: list[UserBlock] = []
    _REG.loading, _REG.origin = found, origin
    try:
        yield found
    except BaseException:
        _forget(found)  # nothing half-registered is left behind
        raise
    finally:
        _REG.loading, _REG.origin = None, ""


def _forget(entries: list[UserBlock]) -> None:
    for name in [n for n, b in _REG.blocks.items() if any(b is e for e in entries)]:
        del _REG.blocks[name]
    for key in [k for k, (_, found) in _REG.files.items() if any(b is e for b in found for e in entries)]:
        del _REG.files[key]


def forget(entry: UserBlock) -> None:
    """Unregister a block and every other block of its file (a file loads whole or not at all)."""
    siblings = next((found for _, found in _REG.files.values() if any(b is entry for b in found)), [entry])
    _forget(list(siblings))


def _import(path: Path, source: bytes, digest: str) -> None:
    name = f"attn_deploy_user_blocks.{path.stem if path.stem.isidentifier() else 'blocks'}_{digest[:12]}"
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        raise BlockError(f"{path} line {e.lineno}: syntax error: {one_line(str(e.msg), 80)}") from None
    except ValueError as e:  # null bytes
        raise BlockError(f"{path} is not Python source: {one_line(str(e), 60)}") from None
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and typing look their module up while it runs
    try:
        exec(code, module.__dict__)  # noqa: S102 - the user's own block file, run as they asked
    except BlockError as e:
        del sys.modules[name]
        raise BlockError(f"{path}: {e.message}", e.hint) from None
    except Exception as e:  # noqa: BLE001 - their code may raise anything: one line naming it
        del sys.modules[name]
        raise BlockError(f"{path}{_line_in(e, path)}: importing it failed: {type(e).__name__}: {one_line(str(e), 80)}",
                         detail="".join(traceback.format_exception(e))) from None


def _line_in(e: BaseException, path: Path) -> str:
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    return f" line {lines[-1]}" if lines else ""


def load_entry_points() -> list[UserBlock]:
    """Import, once per process, each installed package's ``attn_deploy.blocks`` entry point."""
    if _REG.entry_points_loaded:
        return []
    _REG.entry_points_loaded = True
    from importlib.metadata import entry_points

    out: list[UserBlock] = []
    for ep in entry_points(group=ENTRY_POINTS):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "a package"
        with _registering(f"entry point {ep.name} of {dist}") as found:
            try:
                ep.load()
            except BlockError as e:
                raise BlockError(f"entry point {ep.name} ({ep.value}) of {dist}: {e.message}", e.hint) from None
            except Exception as e:  # noqa: BLE001 - an installed package's code: named, not a traceback
                raise BlockError(f"entry point {ep.name} ({ep.value}) of {dist} failed to load: "
                                 f"{type(e).__name__}: {one_line(str(e), 80)}") from None
        out += found
    return out
