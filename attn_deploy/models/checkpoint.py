"""Reading training checkpoints without running them.

ultralytics/yolov5, YOLOAir and ultralytics (YOLOv8 to YOLO26) save ``{'model': <whole model
object>, 'ema': ..., ...}`` with pickle. Loading that the usual way imports their code and
executes whatever the pickle names. We unpickle with a restricted unpickler instead
(``unpickler.py``: inert records for model objects, inert stand-ins for pickled code, any
other global refused by name), after the archive is checked (whole, not encrypted, not a zip
bomb) and before anything walks what came out (a bound on its expanded size). From the records
come the yaml, the class names, the strides and each layer's tensors; ``Checkpoint.ignored``
names the functions a fork pickled onto its objects (never bound or called), and the loader
warns once.
"""

from __future__ import annotations

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

from attn_deploy.errors import AttnDeployWarning, UserError, library_text
from attn_deploy.files import check_expansion
from attn_deploy.models.unpickler import (
    ModulePart,
    PickledCode,
    Record,
    RefusedCall,
    RefusedGlobal,
    SafeUnpickler,
    allowed_global,
    pickle_globals,
    plain,
)

__all__ = ["Checkpoint", "Record", "pickle_globals", "read_checkpoint", "safe_load", "write_checkpoint"]

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
FORMAT = "attn-deploy-checkpoint/1"
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
    made: list[SafeUnpickler] = []

    class Unpickler(SafeUnpickler):  # one per load, so that what it met can be read back
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
    refused = sorted(n for n in pickle_globals(head) if not allowed_global(n))
    if refused:
        return f"{path} refused: a plain pickle that asks to import {', '.join(refused[:3])}"
    return f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive; this is not one)"


def _refuse_globals(path: Path, names: list[str]) -> None:
    refused = sorted(n for n in names if not allowed_global(n))
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
    qat: dict[str, Any] | None = None  # ours, quantized: Model Optimizer's quantizer state (models/quantized.py)
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
            isinstance(n, str) and plain(x) for n, x in v.items()) for k, v in variants.items())):
        raise UserError(f"{path}: its attention variants are not a table of plain keywords by layer")
    qat = obj.get("qat")
    if qat is not None and not (isinstance(qat, dict) and isinstance(qat.get("modelopt"), dict)):
        raise UserError(f"{path}: its quantization state is not Model Optimizer's (a dict under qat.modelopt)")
    return Checkpoint(path, _group_by_layer(_state_dict(state), path), yaml=cfg,
                      names=[str(n) for n in names] if isinstance(names, list) else None, variants=variants, qat=qat)
