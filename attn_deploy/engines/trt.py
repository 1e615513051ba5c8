"""TensorRT: what is installed, which GPU this is, and the runner (Polygraphy's TrtRunner).

TensorRT is imported late and only here and in ``build.py``; a machine without it gets one
user error that says what to install. Device buffers are Polygraphy's own (its CUDA wrapper
over the driver's runtime library), so nobody compiles pycuda to run an engine.

An engine only runs on the TensorRT version that built it and on GPUs of the same compute
capability. ``build`` records both in ``FILE.engine.json``; the runner compares them with
this machine before deserialising, and refuses a mismatch with a sentence instead of the
crash or opaque deserialisation error TensorRT gives.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy.engines.base import Runner, TensorSpec
from attn_deploy.errors import UserError

INSTALL = (
    "on a server: pip install tensorrt (from NVIDIA's index, --extra-index-url https://pypi.nvidia.com); "
    "on a Jetson: the TensorRT of JetPack (sudo apt install python3-libnvinfer), in a venv made with "
    "--system-site-packages"
)


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None; does not import it when absent."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        return str(importlib.import_module("tensorrt").__version__)
    except (ImportError, OSError, AttributeError):  # a stub package, or libnvinfer missing
        return None


def require_tensorrt() -> Any:
    if tensorrt_version() is None:
        raise UserError("TensorRT is not installed", INSTALL)
    return importlib.import_module("tensorrt")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.9"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "compute_capability": self.compute_capability}


def gpu_info() -> GpuInfo | None:
    """The first CUDA GPU: from torch when it is a CUDA build, else from nvidia-smi; None
    without a GPU."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        return GpuInfo(torch.cuda.get_device_name(0), f"{major}.{minor}")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, cc = first.rpartition(",")
    return GpuInfo(name.strip(), cc.strip()) if name else None


def engine_sidecar(engine: Path) -> dict[str, Any] | None:
    """``FILE.engine.json`` beside an engine, or None when there is none."""
    path = engine.with_name(engine.name + ".json")
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable engine sidecar ({e})") from None
    return doc if isinstance(doc, dict) else None


def check_compatible(sidecar: dict[str, Any], trt: str, gpu: GpuInfo | None, engine: str) -> None:
    """Refuse an engine built for another TensorRT or another GPU architecture."""
    built = sidecar.get("tensorrt")
    if built and built != trt and not sidecar.get("version_compatible"):
        raise UserError(f"{engine} was built with TensorRT {built}, this machine has {trt}",
                        "engines are tied to the TensorRT that built them: build it again here")
    cc = (sidecar.get("gpu") or {}).get("compute_capability")
    if cc and gpu is not None and cc != gpu.compute_capability:
        raise UserError(
            f"{engine} was built for compute capability {cc} ({sidecar['gpu'].get('name')}), "
            f"this GPU is {gpu.compute_capability} ({gpu.name})", "build it again on this GPU")
    if cc and gpu is None:
        raise UserError(f"{engine} needs a CUDA GPU (built for {sidecar['gpu'].get('name')}); none found")


class TrtRunner(Runner):
    """A serialised engine behind our runner interface, through Polygraphy's TrtRunner."""

    name = "tensorrt"

    def __init__(self, engine: str | Path, data: bytes | None = None) -> None:
        """``data``: a serialised engine held in memory (a debug engine); ``engine`` names it."""
        super().__init__()
        self.path = Path(engine)
        self.data = data
        self._runner: Any = None

    def activate_impl(self) -> None:
        trt = require_tensorrt()
        sidecar = engine_sidecar(self.path) if self.data is None else None
        if sidecar is not None:
            check_compatible(sidecar, trt.__version__, gpu_info(), str(self.path))
        from polygraphy.backend.trt import EngineFromBytes
        from polygraphy.backend.trt import TrtRunner as PolygraphyTrtRunner

        self._runner = PolygraphyTrtRunner(EngineFromBytes(self.data if self.data is not None else self.path.read_bytes()))
        try:
            self._runner.activate()
        except Exception as e:  # Polygraphy raises PolygraphyException with TensorRT's log
            raise UserError(f"{self.path}: TensorRT cannot load this engine: {str(e).splitlines()[0]}") from e

    def deactivate_impl(self) -> None:
        self._runner.deactivate()
        self._runner = None

    def inputs(self) -> list[TensorSpec]:
        self.activate()
        from polygraphy.datatype import DataType

        # Polygraphy DataTypes (use_numpy_dtypes=True is deprecated, to be removed in 0.60)
        meta = self._runner.get_input_metadata(use_numpy_dtypes=False)
        return [TensorSpec(name, tuple(d if d is None or d >= 0 else None for d in m.shape),
                           np.dtype(DataType.to_dtype(m.dtype, "numpy")).name) for name, m in meta.items()]

    def output_names(self) -> list[str]:
        self.activate()
        import tensorrt as trt
        from polygraphy.backend.trt import util as trt_util

        meta = trt_util.get_metadata_from_engine(self._runner.engine, self._runner.context, mode=trt.TensorIOMode.OUTPUT)
        return list(meta.keys())

    def run_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._runner.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        # copies: Polygraphy's TrtRunner reuses its host output buffers on the next infer()
        return {k: np.array(v, copy=True) for k, v in outputs.items()}
