"""Reading training checkpoints without running them.

ultralytics/yolov5, YOLOAir and ultralytics (YOLOv8 to YOLO26) save ``{'model': <whole model
object>, 'ema': ..., ...}`` with pickle. Loading that the usual way imports their code and
executes whatever the pickle names. We unpickle with torch's restricted ``weights_only``
unpickler instead: tensors, storages and plain containers are rebuilt by torch; every class
under the namespaces that hold model code (``models.*``, ``utils.*``, ``torch.nn.modules.*``,
``ultralytics.nn.tasks.*``, ``ultralytics.nn.modules.*``) is replaced by an inert record that
only stores the pickled state; so are the few argument namespaces in ``NAMESPACE_CLASSES``
(ultralytics' training arguments); a few numpy reconstructors are allowed for the arrays
training scripts leave in the metadata; any other global is refused before anything is
loaded, with its name in the error. A record can never be called with arguments: a pickle that
tries is refused as well. (A namespace pickles as a call with none, which makes an empty
record that the pickle then fills with plain data; other records refuse even that.)
"""

from __future__ import annotations

import importlib
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attn_deploy.errors import UserError, library_text

RECORD_NAMESPACES = ("models.", "utils.", "torch.nn.modules.", "ultralytics.nn.tasks.", "ultralytics.nn.modules.")
# argument holders that pickle as ``cls()`` then their __dict__ (SimpleNamespace's own reduce):
# ultralytics' trainer keeps its arguments in one on the model, so last.pt and best.pt name it
NAMESPACE_CLASSES = frozenset({"ultralytics.utils.IterableSimpleNamespace"})
_NUMPY_DATA = re.compile(
    r"^numpy\.(_?core\.multiarray\.(_reconstruct|scalar)|ndarray|dtype|dtypes\.\w+DType)$"
)
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
FORMAT = "attn-deploy-checkpoint/1"


class RefusedCall(Exception):
    """Raised from inside the unpickler when a pickle tries to call a recorded name."""


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


def _numpy_dtype_classes() -> list[tuple[type, str]]:
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    if dtypes is None:  # numpy < 1.25 has no per-dtype classes
        return []
    return [(c, f"numpy.dtypes.{n}") for n, c in vars(dtypes).items() if n.endswith("DType") and isinstance(c, type)]


MAX_TENSOR = 1 << 28  # elements in one tensor (1 GiB of float32); yolov5x's largest holds 14.7M
MAX_DIMS = 8
MAX_ARCHIVE = 16 << 30  # bytes a checkpoint's archive may unpack to
MAX_RATIO = 200  # a compressed entry growing more than this is a zip bomb (torch.save stores, never deflates)


def safe_load(path: Path) -> Any:
    """torch.load with only tensors, plain containers and inert records; refuses the rest."""
    _check_archive(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # noqa: BLE001 - the zip and pickle readers fail in many ways
        raise UserError(f"{path} cannot be read: its archive is damaged or truncated ({library_text(e, 60)})",
                        detail=str(e)) from e
    _refuse_globals(path, names)
    allowed = [(_numpy_global(n) if _NUMPY_DATA.match(n) else _record_class(n), n) for n in names]
    if any(_NUMPY_DATA.match(n) for n in names):
        allowed += _numpy_dtype_classes()  # the types a rebuilt numpy.dtype instance has
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except RefusedCall as e:
        raise UserError(f"{path} refused: it asks to call {e}", "model objects are read, never run") from e
    except MemoryError as e:
        raise UserError(f"{path} asks for more memory than this machine has (a tensor bomb?)") from e
    except Exception as e:  # noqa: BLE001 - only allow-listed rebuilders ran: any failure is malformed data
        raise UserError(f"{path} cannot be read: {_why_unreadable(e)}", detail=str(e)) from e


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
    return list(dict.fromkeys(found))


def _allowed_global(name: str) -> bool:
    return name.startswith(RECORD_NAMESPACES) or name in NAMESPACE_CLASSES or bool(_NUMPY_DATA.match(name))


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

    @property
    def kind(self) -> str:
        return "training checkpoint" if self.records else "state dict"


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A yolov5/YOLOAir/ultralytics training checkpoint or a plain state dict, read safely."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    obj = safe_load(p)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_ours(p, obj)
    model = _pick_model(obj)
    if isinstance(model, Record):
        return _from_record(p, model)
    state = _state_dict(model)
    if state is None:
        raise UserError(f"{p} holds neither a model object nor a state dict of tensors")
    return Checkpoint(p, _group_by_layer(state, p))


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
    doc = {"format": FORMAT, "yaml": model.yaml, "names": list(model.names), "state_dict": state, **(extra or {})}
    buf = io.BytesIO()
    torch.save(doc, buf)
    return atomic_write(path, buf.getvalue())


def _from_ours(path: Path, obj: dict[str, Any]) -> Checkpoint:
    state, cfg = obj.get("state_dict"), obj.get("yaml")
    if _state_dict(state) is None or not isinstance(cfg, dict):
        raise UserError(f"{path}: an attn-deploy checkpoint without its yaml or state dict")
    names = obj.get("names")
    return Checkpoint(path, _group_by_layer(_state_dict(state), path), yaml=cfg,
                      names=[str(n) for n in names] if isinstance(names, list) else None)
