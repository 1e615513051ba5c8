"""Reading training checkpoints without running them.

ultralytics/yolov5, YOLOAir and ultralytics (YOLOv8 to YOLO26) save ``{'model': <whole model
object>, 'ema': ..., ...}`` with pickle. Loading that the usual way imports their code and
executes whatever the pickle names. We unpickle with a restricted unpickler instead (the
pure-Python ``pickle._Unpickler`` with every opcode that acts checked, as torch's
``weights_only`` unpickler checks them, but with the opcodes dill's pickles use as well):
``find_class`` hands out torch's own weights-only rebuilders (tensors, storages, plain
containers) and inert stand-ins, and refuses any other global before anything is loaded,
with its name in the error. The stand-ins:

- every class under the namespaces that hold model code (``models.*``, ``utils.*``,
  ``torch.nn.modules.*``, ``ultralytics.nn.tasks.*``, ``ultralytics.nn.modules.*``), and the
  dotted names a user's block file registers (``attn_deploy/blocks.py``), is an inert
  record that only stores the pickled state; so are the argument namespaces in
  ``NAMESPACE_CLASSES`` (ultralytics' training arguments). A record can never be called with
  arguments: a pickle that tries is refused. (A namespace pickles as a call with none.)
- the names through which a pickle makes or reaches code (dill's ``_create_function``,
  ``_create_code``, ``_create_type``; ``types.MethodType``; ``getattr``; ``__main__``) are
  ``PickledCode`` stand-ins: calling one records what the pickle asked for and runs nothing,
  so a function, lambda or bound method pickled onto a model object (as forks that save with
  dill do) arrives as an inert marker; ``Checkpoint.ignored`` names each one, the loader
  warns once, and nothing binds or calls them. A class pickled by value becomes a record.
- a few numpy reconstructors, for the arrays training scripts leave in the metadata.

Calls (REDUCE, NEWOBJ, INST/OBJ) go only to what ``find_class`` handed out or to stand-ins;
BUILD only fills records, stand-ins, tensors, numpy arrays and ordered dicts.
"""

from __future__ import annotations

import collections
import importlib
import pickle
import re
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attn_deploy.blocks import pickle_names
from attn_deploy.errors import AttnDeployWarning, UserError, library_text
from attn_deploy.files import check_expansion

RECORD_NAMESPACES = ("models.", "utils.", "torch.nn.modules.", "ultralytics.nn.tasks.", "ultralytics.nn.modules.")
# argument holders that pickle as ``cls()`` then their __dict__ (SimpleNamespace's own reduce):
# ultralytics' trainer keeps its arguments in one on the model, so last.pt and best.pt name it
NAMESPACE_CLASSES = frozenset({"ultralytics.utils.IterableSimpleNamespace"})
_NUMPY_DATA = re.compile(
    r"^numpy\.(_?core\.multiarray\.(_reconstruct|scalar)|ndarray|dtype|dtypes\.\w+DType)$"
)
# names through which a pickle makes or reaches code: answered by PickledCode stand-ins
# (``M.__dict__`` is a pickled function's globals: a module's namespace, named, never imported)
_CODE = re.compile(r"^(dill(\.[\w.]+)?|types\.\w+|builtins\.(getattr|setattr|__main__)|[\w.]+\.__dict__)$")
# import machinery that dill pickles with a function's module globals (``__spec__``,
# ``__loader__``) when the module was not importable by name where it was saved: types that
# describe a module, answered by ModuleParts that keep their name and file. Their functions
# and methods (``SourceFileLoader.load_module``, ``_frozen_importlib._load``) stay refused.
_MACHINERY = re.compile(
    r"^(_frozen_importlib|importlib\._bootstrap)\.(ModuleSpec|BuiltinImporter|FrozenImporter)$"
    r"|^(_frozen_importlib_external|importlib\._bootstrap_external)\."
    r"(SourceFileLoader|SourcelessFileLoader|ExtensionFileLoader|_?NamespaceLoader|_NamespacePath)$"
)
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
FORMAT = "attn-deploy-checkpoint/1"


class RefusedCall(Exception):
    """Raised from inside the unpickler when a pickle tries to call a recorded name."""


class RefusedGlobal(Exception):
    """Raised from inside the unpickler when a pickle names a global that is not allowed."""


class PickledCode:
    """What a pickle built from code-making globals (a function, a lambda, a bound method, a
    code object): a description, never the thing; calling it only describes the call."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, *args: Any, **kwargs: Any) -> PickledCode:
        return PickledCode(self.what)

    def __setstate__(self, state: Any) -> None:  # dill fills a function's __dict__: dropped
        pass

    def __repr__(self) -> str:
        return f"<pickled {self.what}>"


class ModulePart(PickledCode):
    """What a pickle built from import machinery (a module spec, a loader): the module's name
    and file, never a real spec or loader."""

    def __setstate__(self, state: Any) -> None:
        fields = state[-1] if isinstance(state, tuple) and state else state
        if isinstance(fields, dict):
            name, where = fields.get("name"), fields.get("origin") or fields.get("path")
            self.module = name[:80] if isinstance(name, str) else None
            self.file = where[-120:] if isinstance(where, str) else None

    module: str | None = None
    file: str | None = None


# plain data types a pickle may name through dill's ``_load_type``; calling one runs no user code
_DATA_TYPES = {t.__name__: t for t in (set, frozenset, list, dict, tuple, bytes, bytearray, str, int, float,
                                       complex, bool, type(None))}


class _StandIn:
    """The stand-in for one code-making global: calling it describes, from plain arguments only."""

    def __init__(self, full_name: str) -> None:
        self.full_name = full_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name, short = self.full_name, self.full_name.rsplit(".", 1)[-1]
        if short == "_load_type" and args and isinstance(args[0], str):
            return _DATA_TYPES.get(args[0]) or _StandIn(f"types.{args[0][:40]}")
        if short == "_create_type" and len(args) > 1 and isinstance(args[1], str):
            return _record_class(f"<pickled by value>.{args[1][:60]}")  # its instances: records
        if short == "_create_array" and len(args) > 2 and _is_numpy_reconstruct(args[0]):
            array = args[0](*args[1])  # numpy's own reconstructor (allow-listed), as dill does
            array.__setstate__(args[2])
            return array
        if short == "_create_function" and len(args) > 2 and isinstance(args[2], str):
            return PickledCode("lambda" if args[2] == "<lambda>" else f"function {args[2][:60]}")
        if short == "MethodType" and args:
            return PickledCode(f"bound method ({_described(args[0])})")
        if short == "getattr" and len(args) > 1 and isinstance(args[1], str):
            return PickledCode(f"bound method {args[1][:60]}")
        if short == "_create_code":
            return PickledCode("code object")
        if _MACHINERY.match(name):
            return ModulePart(short)
        return PickledCode(name)

    def __setstate__(self, state: Any) -> None:
        pass


def _is_numpy_reconstruct(f: Any) -> bool:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return f is core.multiarray._reconstruct


def _described(obj: Any) -> str:
    return obj.what if isinstance(obj, PickledCode) else type(obj).__name__


class _RecordMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # a pickle REDUCE on the name
        raise RefusedCall(cls.full_name)


class _NamespaceMeta(_RecordMeta):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # SimpleNamespace's reduce: cls(), then state
        if args or kwargs:
            raise RefusedCall(cls.full_name)
        return cls.__new__(cls)


class Record(metaclass=_RecordMeta):
    """A stand-in for one pickled object of a model namespace: its state, no behaviour."""

    full_name = ""

    def __new__(cls, *args: Any) -> Record:
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state if isinstance(state, dict) else {"_state": state}

    @property
    def class_name(self) -> str:
        return self.full_name.rsplit(".", 1)[-1]

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get("state", {}).get(key, default)

    def children(self) -> dict[str, Record]:
        return {k: v for k, v in (self.get("_modules") or {}).items() if isinstance(v, Record)}

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """Parameters and persistent buffers in state-dict order, as nn.Module.state_dict walks."""
        out: dict[str, Tensor] = {}
        skip = self.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for k, t in (self.get(group) or {}).items():
                if isinstance(t, Tensor) and k not in skip:
                    out[prefix + k] = t
        for name, child in self.children().items():
            out.update(child.tensors(f"{prefix}{name}."))
        return out

    def attrs(self, prefix: str = "") -> dict[str, Any]:
        """Plain attributes (numbers, strings, tuples) by dotted path."""
        out = {prefix + k: v for k, v in self.__dict__.get("state", {}).items()
               if not k.startswith("_") and k != "training" and _plain(v)}
        for name, child in self.children().items():
            out.update(child.attrs(f"{prefix}{name}."))
        return out

    def classes(self, prefix: str = "") -> dict[str, str]:
        out = {prefix.rstrip("."): self.class_name}
        for name, child in self.children().items():
            out.update(child.classes(f"{prefix}{name}."))
        return out


def _plain(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    return isinstance(v, (tuple, list)) and all(_plain(x) for x in v)


def _record_class(full_name: str) -> type[Record]:
    meta = _NamespaceMeta if full_name in NAMESPACE_CLASSES else _RecordMeta
    return meta(full_name.rsplit(".", 1)[-1], (Record,), {"full_name": full_name})


def _numpy_global(full_name: str) -> Any:
    """One of the numpy data reconstructors matched by _NUMPY_DATA (nothing else reaches here)."""
    module, _, name = full_name.rpartition(".")
    with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias that 1.x pickles name
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(importlib.import_module(module), name)


MAX_TENSOR = 1 << 28  # elements in one tensor (1 GiB of float32); yolov5x's largest holds 14.7M
MAX_DIMS = 8
MAX_ARCHIVE = 16 << 30  # bytes a checkpoint's archive may unpack to
MAX_RATIO = 200  # a compressed entry growing more than this is a zip bomb (torch.save stores, never deflates)


MAX_VALUES = 1_000_000  # values in a checkpoint walked as a tree; a yolov5x training checkpoint has ~30k
MAX_DEPTH = 200


def safe_load(path: Path, notes: list[str] | None = None) -> Any:
    """torch.load through the restricted unpickler: only tensors, plain containers, inert
    records and stand-ins come out; any other global is refused by name. ``notes`` gets one
    line per module whose import machinery the pickle held (never constructed)."""
    _check_archive(path)
    try:
        with zipfile.ZipFile(path) as z:
            data = z.read(next(i for i in z.infolist() if i.filename.endswith("data.pkl")))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise UserError(f"{path} cannot be read: its archive is damaged or truncated ({library_text(e, 60)})",
                        detail=str(e)) from e
    _refuse_globals(path, pickle_globals(data))  # all the names at once, for the message
    made: list[_SafeUnpickler] = []

    class Unpickler(_SafeUnpickler):  # one per load, so that what it met can be read back
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    module = types.ModuleType("attn_deploy_safe_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = None  # type: ignore[attr-defined]  # torch reads the zip's data.pkl through Unpickler only
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=module)
    except RefusedGlobal as e:  # one the opcode scan did not see: find_class is the real guard
        _refuse_globals(path, [str(e)])
        raise
    except RefusedCall as e:
        raise UserError(f"{path} refused: it asks to call {e}", "model objects are read, never run") from e
    except MemoryError as e:
        raise UserError(f"{path} asks for more memory than this machine has (a tensor bomb?)") from e
    except RecursionError as e:
        raise UserError(f"{path} cannot be read: its objects nest too deeply") from e
    except Exception as e:  # noqa: BLE001 - only allow-listed rebuilders ran: any failure is malformed data
        raise UserError(f"{path} cannot be read: {_why_unreadable(e)}", detail=str(e)) from e
    # pickle's shared references make a "billion laughs" of a few hundred bytes: unpickling it is
    # cheap, but every reader that walks a yaml row, an option dict or a record's state (the
    # pickled-code scan, the yaml checks, a warning's text) would expand it
    check_expansion(obj, f"{path} refused", MAX_VALUES, MAX_DEPTH, _inside, "its objects", "pickle")
    if notes is not None:
        notes += _machinery_notes([part for u in made for part in u.module_parts])
    return obj


def _inside(obj: Any) -> list[Any] | None:
    """What a checkpoint's non-container objects hold: a record its state, an object array its items."""
    if isinstance(obj, Record):
        return [obj.__dict__.get("state")]
    if type(obj).__name__ == "ndarray" and getattr(obj.dtype, "hasobject", False):
        return list(obj.flat)
    return None


def _machinery_notes(parts: list[ModulePart]) -> list[str]:
    """One line per module whose spec or loader a pickled function's globals carried."""
    modules: dict[str, set[str]] = {}
    for part in parts:
        modules.setdefault(part.module or "a module", set()).add(part.what)
    return [f"import machinery of {name} ({', '.join(sorted(kinds))})"
            for name, kinds in modules.items()]


def _allowed_calls() -> dict[str, Any]:
    """torch's own weights-only rebuilders (tensors, storages, dtypes, plain containers)."""
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


class _SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """pickle's pure-Python unpickler with globals, calls and state-setting restricted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allowed = _allowed_calls()
        self._records: dict[str, type[Record]] = {}
        self._user = pickle_names()
        self._handed: set[int] = set()
        self.module_parts: list[ModulePart] = []  # import machinery met on the way (named in the warning)

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module.replace('__builtin__', 'builtins')}.{name}"
        if full in self._allowed:
            obj = self._allowed[full]
        elif _NUMPY_DATA.match(full):
            obj = _numpy_global(full)
        elif full.startswith(RECORD_NAMESPACES) or full in NAMESPACE_CLASSES or full in self._user:
            obj = self._records.setdefault(full, _record_class(full))
        elif _CODE.match(full) or _MACHINERY.match(full):
            obj = _StandIn(full)
        else:
            raise RefusedGlobal(full)
        self._handed.add(id(obj))
        return obj

    def _callable(self, func: Any) -> Any:
        if (id(func) in self._handed or isinstance(func, (PickledCode, _StandIn)) or func in _DATA_TYPES.values()
                or (isinstance(func, type) and issubclass(func, Record))):
            return func
        raise RefusedCall(getattr(func, "__qualname__", type(func).__name__))

    def _made(self, obj: Any) -> Any:
        if isinstance(obj, ModulePart):
            self.module_parts.append(obj)
        return obj

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._made(self._callable(self.stack[-1])(*args))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self._callable(self.stack.pop())
        self.append(self._made(cls() if isinstance(cls, (PickledCode, _StandIn)) else cls.__new__(cls, *args)))

    def load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        cls = self._callable(self.stack.pop())
        self.append(self._made(cls() if isinstance(cls, (PickledCode, _StandIn)) else cls.__new__(cls, *args, **kwargs)))

    def _instantiate(self, klass: Any, args: Any) -> None:
        self.append(self._made(self._callable(klass)(*args)))

    def load_build(self) -> None:
        import numpy as np

        inst = self.stack[-2]  # under the state
        if isinstance(inst, type) or not isinstance(
                inst, (Record, PickledCode, _StandIn, Tensor, collections.OrderedDict, np.ndarray, np.dtype)):
            raise RefusedCall(f"state set on {type(inst).__name__}")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def _why_unreadable(e: BaseException) -> str:
    text = str(e)
    if "failed locating file" in text or "file not found" in text:
        return "it refers to data its archive does not hold"
    if isinstance(e, (AttributeError, TypeError)):
        return f"an object in it is not what it claims to be ({library_text(e, 60)})"
    return f"malformed ({library_text(e, 80)})"


def _check_archive(path: Path) -> None:
    """A torch.save zip archive, whole, not a bomb; a plain pickle is refused, naming what
    it would import (read with pickletools, which never executes anything)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except zipfile.BadZipFile:
        raise UserError(_not_a_checkpoint(path)) from None
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path} cannot be read: its archive is damaged or truncated") from e
    if not any(i.filename.endswith("data.pkl") for i in infos):
        raise UserError(f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl in it)")
    locked = [i.filename for i in infos if i.flag_bits & 0x1]
    if locked:
        raise UserError(f"{path} cannot be read: its archive member {locked[0][-60:]} is encrypted "
                        "(torch.save never encrypts; a password-protected zip is not a checkpoint)")
    total = sum(i.file_size for i in infos)
    bomb = [i.filename for i in infos if i.compress_size and i.file_size > MAX_RATIO * i.compress_size > 0]
    if total > MAX_ARCHIVE or bomb:
        raise UserError(f"{path} refused: its archive unpacks to {total / 2**30:.1f} GiB"
                        + (f" ({bomb[0]} grows {MAX_RATIO}x or more: a zip bomb?)" if bomb else ""))


def _not_a_checkpoint(path: Path) -> str:
    try:
        head = path.read_bytes()[: 1 << 20]
    except OSError as e:
        return f"cannot read {path}: {e.strerror or type(e).__name__}"
    if head.startswith(b"PK"):
        return f"{path} cannot be read: its zip archive is damaged or truncated"
    refused = sorted(n for n in pickle_globals(head) if not _allowed_global(n))
    if refused:
        return f"{path} refused: a plain pickle that asks to import {', '.join(refused[:3])}"
    return f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive; this is not one)"


def pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals a pickle would import, found by reading its opcodes
    (pickletools never executes anything); stops quietly where the data stops being a pickle."""
    import pickletools

    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name or op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(str(arg))
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(arg), str):
                strings.append(memo[arg])
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - garbage after a point: what was found so far stands
        pass
    return list(dict.fromkeys(re.sub(r"^__builtin__\.", "builtins.", n) for n in found))


def _allowed_global(name: str) -> bool:
    """What the restricted unpickler will hand out (as a record, a stand-in or torch's rebuilder)."""
    name = name.replace("__builtin__", "builtins")
    return (name.startswith(RECORD_NAMESPACES) or name in NAMESPACE_CLASSES or name in pickle_names()
            or bool(_NUMPY_DATA.match(name)) or bool(_CODE.match(name)) or bool(_MACHINERY.match(name))
            or name in _allowed_calls())


def _refuse_globals(path: Path, names: list[str]) -> None:
    refused = sorted(n for n in names if not _allowed_global(n))
    if refused:
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        raise UserError(
            f"{path} refused: it asks to import {', '.join(refused[:3])}{more}",
            "a checkpoint may hold tensors, plain containers and model objects only",
        )


def check_tensor(t: Tensor, name: str, path: Path) -> Tensor:
    """A tensor a model layer could hold: a few dimensions, a sane size, a number type."""
    if t.dim() > MAX_DIMS:
        raise UserError(f"{path}: tensor {name[:60]} has {t.dim()} dimensions (a layer's have at most {MAX_DIMS})")
    if t.numel() > MAX_TENSOR:
        raise UserError(f"{path}: tensor {name[:60]} claims {t.numel():,} elements (a tensor bomb?)")
    if t.is_complex() or t.dtype in (torch.bool,) or t.is_quantized:
        raise UserError(f"{path}: tensor {name[:60]} is {t.dtype}, not a weight")
    return t


@dataclass
class Checkpoint:
    """What a checkpoint holds, by yaml layer: tensors, attributes, class names."""

    path: Path
    layers: dict[int, dict[str, Tensor]]
    yaml: dict[str, Any] | None = None
    names: list[str] | None = None
    stride: list[float] | None = None
    records: dict[int, Record] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # functions pickled in it, never run: "model.3.forward (lambda)"
    machinery: list[str] = field(default_factory=list)  # import machinery in pickled globals, never constructed
    variants: dict[int, dict[str, Any]] = field(default_factory=dict)  # ours: attention layers' constructor keywords

    @property
    def kind(self) -> str:
        return "training checkpoint" if self.records else "state dict"


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A yolov5/YOLOAir/ultralytics training checkpoint or a plain state dict, read safely."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    machinery: list[str] = []
    obj = safe_load(p, machinery)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_ours(p, obj)
    model = _pick_model(obj)
    if isinstance(model, Record):
        ckpt = _from_record(p, model)
        ckpt.ignored, ckpt.machinery = pickled_code(obj), machinery
        return ckpt
    state = _state_dict(model)
    if state is None:
        raise UserError(f"{p} holds neither a model object nor a state dict of tensors")
    return Checkpoint(p, _group_by_layer(state, p))


def pickled_code(obj: Any, path: str = "", depth: int = 0) -> list[str]:
    """Where a loaded checkpoint holds pickled functions (``model.3.forward (lambda)``): the
    attributes a fork set on its objects, which we leave unbound and uncalled."""
    if isinstance(obj, PickledCode):
        return [f"{path or 'the checkpoint'} ({obj.what})"]
    if depth > 64:
        return []
    found: list[str] = []
    if isinstance(obj, Record):
        state = obj.__dict__.get("state", {})
        for key, value in state.items():
            if key in ("_parameters", "_buffers"):
                continue
            if key == "_modules" and isinstance(value, dict):
                for name, child in value.items():
                    found += pickled_code(child, f"{path}.{name}" if path else str(name), depth + 1)
            else:
                found += pickled_code(value, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found += pickled_code(value, f"{path}[{key!r}]" if path else str(key), depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            found += pickled_code(value, f"{path}[{i}]", depth + 1)
    return found


def warn_ignored(ckpt: Checkpoint) -> None:
    """One warning line naming the pickled functions that were left unrun."""
    alike: dict[str, list[str]] = {}  # one entry per kind of function: "model.3.forward (lambda)"
    for entry in ckpt.ignored:
        alike.setdefault(entry[entry.find(" ("):], []).append(entry)
    kinds = [same[0] + (f" and {len(same) - 1} more like it" if len(same) > 1 else "") for same in alike.values()]
    shown = ", ".join(kinds[:3]) + (f" and {len(kinds) - 3} more kinds" if len(kinds) > 3 else "")
    also = "".join(f"; {note}" for note in ckpt.machinery)
    warnings.warn(f"{ckpt.path.name}: {len(ckpt.ignored)} pickled function(s) ignored, never run or bound: {shown}{also}",
                  AttnDeployWarning, stacklevel=3)


def _pick_model(obj: Any) -> Any:
    """The EMA weights when a checkpoint has them, as yolov5's and ultralytics' loaders prefer
    (ultralytics' trainer writes ``'model': None`` beside them; ``YOLO.save`` the reverse)."""
    if isinstance(obj, dict):
        for key in ("ema", "model", "state_dict", "model_state_dict"):
            if obj.get(key) is not None:
                return obj[key]
    return obj


def _state_dict(obj: Any) -> dict[str, Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return None


def _group_by_layer(state: dict[str, Tensor], path: Path) -> dict[int, dict[str, Tensor]]:
    layers: dict[int, dict[str, Tensor]] = {}
    for key, t in state.items():
        m = re.match(r"^(?:model\.)?(\d{1,4})\.(.+)$", key) if isinstance(key, str) else None
        if not m:
            raise UserError(f"{path}: unexpected key {str(key)[:60]!r} (expected model.<layer>.<name>, as yolov5 saves)")
        layers.setdefault(int(m.group(1)), OrderedDict())[m.group(2)] = check_tensor(t, key, path)
    return layers


def _from_record(path: Path, model: Record) -> Checkpoint:
    seq = model.children().get("model")
    cfg = model.get("yaml")
    if seq is None or not isinstance(cfg, dict):
        raise UserError(f"{path}: the model object has no 'yaml' and 'model' (not a YOLO model?)")
    if not all(isinstance(k, str) and k.isdigit() and len(k) < 5 for k in seq.children()):
        raise UserError(f"{path}: the model's layers are not numbered 0, 1, ... (not a YOLO model?)")
    records = {int(k): r for k, r in seq.children().items()}
    layers = {i: OrderedDict((k, check_tensor(t, f"model.{i}.{k}", path)) for k, t in r.tensors().items())
              for i, r in records.items()}
    stride = model.get("stride")
    return Checkpoint(
        path, layers, yaml=cfg, names=_class_names(model.get("names")),
        stride=stride.tolist() if isinstance(stride, Tensor) else None, records=records,
    )


def _class_names(names: Any) -> list[str] | None:
    """yolov5 keeps a list; ultralytics a dict {0: 'person', ...}, read in index order."""
    if isinstance(names, dict):
        numbered = all(isinstance(k, int) and not isinstance(k, bool) for k in names)
        names = [names[k] for k in sorted(names, key=(lambda k: k) if numbered else str)]
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None


def write_checkpoint(path: str | Path, model: Any, extra: dict[str, Any] | None = None, half: bool = True) -> Path:
    """Our own checkpoint: plain data only (yaml, class names, a state dict, ``extra``), so
    it reads back through the same safe loader; float tensors in half precision by default
    (as yolov5 saves), which halves the file and is what the loaded model then holds."""
    import io

    from attn_deploy.files import atomic_write

    state = {k: (v.half() if half and v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    variants = {i: dict(m.variant) for i, m in enumerate(model.model) if getattr(m, "variant", None)}
    doc = {"format": FORMAT, "yaml": model.yaml, "names": list(model.names), "state_dict": state,
           "variants": variants, **(extra or {})}
    buf = io.BytesIO()
    torch.save(doc, buf)
    return atomic_write(path, buf.getvalue())


def _from_ours(path: Path, obj: dict[str, Any]) -> Checkpoint:
    state, cfg = obj.get("state_dict"), obj.get("yaml")
    if _state_dict(state) is None or not isinstance(cfg, dict):
        raise UserError(f"{path}: an attn-deploy checkpoint without its yaml or state dict")
    names, variants = obj.get("names"), obj.get("variants") or {}
    if not (isinstance(variants, dict) and all(isinstance(k, int) and isinstance(v, dict) and all(
            isinstance(n, str) and _plain(x) for n, x in v.items()) for k, v in variants.items())):
        raise UserError(f"{path}: its attention variants are not a table of plain keywords by layer")
    return Checkpoint(path, _group_by_layer(_state_dict(state), path), yaml=cfg,
                      names=[str(n) for n in names] if isinstance(names, list) else None, variants=variants)
