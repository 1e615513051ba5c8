"""The restricted unpickler behind ``checkpoint.safe_load``: what a pickle may name, what it
gets instead, and what it may call.

``find_class`` hands out torch's own weights-only rebuilders (tensors, storages, plain
containers) and inert stand-ins, and refuses any other global, by name:

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
  dill do) arrives as an inert marker. A class pickled by value becomes a record. The import
  machinery dill pickles with a function's module globals (a module spec, a loader) becomes
  ``ModulePart``s that keep the module's name.
- a few numpy reconstructors, for the arrays training scripts leave in the metadata.

Calls (REDUCE, NEWOBJ, INST/OBJ) go only to what ``find_class`` handed out or to stand-ins;
BUILD only fills records, stand-ins, tensors, numpy arrays and ordered dicts.
"""

from __future__ import annotations

import collections
import importlib
import pickle
import re
import warnings
from typing import Any

from torch import Tensor

from attn_deploy.blocks import pickle_names


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
               if not k.startswith("_") and k != "training" and plain(v)}
        for name, child in self.children().items():
            out.update(child.attrs(f"{prefix}{name}."))
        return out

    def classes(self, prefix: str = "") -> dict[str, str]:
        out = {prefix.rstrip("."): self.class_name}
        for name, child in self.children().items():
            out.update(child.classes(f"{prefix}{name}."))
        return out


def plain(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    return isinstance(v, (tuple, list)) and all(plain(x) for x in v)


def _record_class(full_name: str) -> type[Record]:
    meta = _NamespaceMeta if full_name in NAMESPACE_CLASSES else _RecordMeta
    return meta(full_name.rsplit(".", 1)[-1], (Record,), {"full_name": full_name})


def _numpy_global(full_name: str) -> Any:
    """One of the numpy data reconstructors matched by _NUMPY_DATA (nothing else reaches here)."""
    module, _, name = full_name.rpartition(".")
    with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias that 1.x pickles name
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(importlib.import_module(module), name)


def _allowed_calls() -> dict[str, Any]:
    """torch's own weights-only rebuilders (tensors, storages, dtypes, plain containers)."""
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


class SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
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


def allowed_global(name: str) -> bool:
    """What the restricted unpickler will hand out (as a record, a stand-in or torch's rebuilder)."""
    name = name.replace("__builtin__", "builtins")
    return (name.startswith(RECORD_NAMESPACES) or name in NAMESPACE_CLASSES or name in pickle_names()
            or bool(_NUMPY_DATA.match(name)) or bool(_CODE.match(name)) or bool(_MACHINERY.match(name))
            or name in _allowed_calls())
