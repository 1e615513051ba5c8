"""Reading training checkpoints without running them.

ultralytics/yolov5 and YOLOAir save ``{'model': <whole model object>, 'ema': ..., ...}`` with
pickle. Loading that the usual way imports yolov5 and executes whatever the pickle names. We
unpickle with torch's restricted ``weights_only`` unpickler instead: tensors, storages and
plain containers are rebuilt by torch; every class under the namespaces that hold model code
(``models.*``, ``utils.*``, ``torch.nn.modules.*``) is replaced by an inert record that only
stores the pickled state; a few numpy reconstructors are allowed for the arrays training
scripts leave in the metadata; any other global is refused before anything is loaded, with its
name in the error. A record can never be called: a pickle that tries is refused as well.
"""

from __future__ import annotations

import importlib
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attn_deploy.errors import UserError

RECORD_NAMESPACES = ("models.", "utils.", "torch.nn.modules.")
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
    return type(full_name.rsplit(".", 1)[-1], (Record,), {"full_name": full_name})


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


def safe_load(path: Path) -> Any:
    """torch.load with only tensors, plain containers and inert records; refuses the rest."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError) as e:
        raise UserError(f"{path} is not a PyTorch checkpoint saved by torch.save ({_first_line(e)})") from e
    refused = sorted(n for n in names if not n.startswith(RECORD_NAMESPACES) and not _NUMPY_DATA.match(n))
    if refused:
        raise UserError(
            f"{path} refused: it asks to import {', '.join(refused)}",
            "a checkpoint may hold tensors, plain containers and model objects only",
        )
    allowed = [(_numpy_global(n) if _NUMPY_DATA.match(n) else _record_class(n), n) for n in names]
    if any(_NUMPY_DATA.match(n) for n in names):
        allowed += _numpy_dtype_classes()  # the types a rebuilt numpy.dtype instance has
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except RefusedCall as e:
        raise UserError(f"{path} refused: it asks to call {e}", "model objects are read, never run") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path} cannot be read: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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
    """A yolov5/YOLOAir training checkpoint or a plain state dict, read safely."""
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
    """yolov5 prefers the EMA weights when a checkpoint has them (attempt_load)."""
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
        m = re.match(r"^(?:model\.)?(\d+)\.(.+)$", key)
        if not m:
            raise UserError(f"{path}: unexpected key {key!r} (expected model.<layer>.<name>, as yolov5 saves)")
        layers.setdefault(int(m.group(1)), OrderedDict())[m.group(2)] = t
    return layers


def _from_record(path: Path, model: Record) -> Checkpoint:
    seq = model.children().get("model")
    cfg = model.get("yaml")
    if seq is None or not isinstance(cfg, dict):
        raise UserError(f"{path}: the model object has no 'yaml' and 'model' (not a yolov5 model?)")
    records = {int(k): r for k, r in seq.children().items()}
    layers = {i: OrderedDict(r.tensors()) for i, r in records.items()}
    names = model.get("names")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names)]
    stride = model.get("stride")
    return Checkpoint(
        path, layers, yaml=cfg, names=[str(n) for n in names] if names else None,
        stride=stride.tolist() if isinstance(stride, Tensor) else None, records=records,
    )


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
