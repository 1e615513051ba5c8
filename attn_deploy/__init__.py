"""attn-deploy: ship attention-augmented YOLOv5 detectors to NVIDIA GPUs, with proof.

The functions the command line calls are the Python API, importable from here::

    from attn_deploy import ShipOptions, ship

    result = ship(ShipOptions(weights="best.pt", data="data.yaml", precision="int8"))

- ``ship`` / ``ShipOptions`` / ``ShipResult``: the whole way, into one folder (``attn-deploy ship``)
- ``load_model``: a zoo name, a yaml and/or a checkpoint (``--model/--cfg/--weights``)
- ``export_model`` / ``ExportSpec`` / ``NmsOptions``: PyTorch to a checked ONNX (``export``)
- ``lint_onnx``: TensorRT's ONNX parser check (``lint``)
- ``calibrate`` / ``CalibOptions``: FP16 or INT8 Q/DQ ONNX within a budget (``calib``)
- ``build_engine`` / ``BuildOptions``: a TensorRT engine (``build``; needs TensorRT)
- ``runner_for``: the runner (ONNX Runtime, TensorRT) for a deployable file
- ``check_parity`` / ``ParityOptions`` / ``Gates``: a deployable against PyTorch (``parity``)
- ``AttnDeployError`` / ``UserError`` / ``GateFailed``: what the library raises

Each is imported on first use (PEP 562), so ``import attn_deploy`` loads none of torch,
ONNX or TensorRT; each one's docstring is its documentation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "ship": "attn_deploy.shipping", "ShipOptions": "attn_deploy.shipping", "ShipResult": "attn_deploy.shipping",
    "load_model": "attn_deploy.models", "export_model": "attn_deploy.exporter", "ExportSpec": "attn_deploy.exporter",
    "NmsOptions": "attn_deploy.exporter", "lint_onnx": "attn_deploy.exporter",
    "calibrate": "attn_deploy.calib.calibrate", "CalibOptions": "attn_deploy.calib.calibrate",
    "build_engine": "attn_deploy.engines.build", "BuildOptions": "attn_deploy.engines.build",
    "runner_for": "attn_deploy.engines", "check_parity": "attn_deploy.parity.check",
    "ParityOptions": "attn_deploy.parity.check", "Gates": "attn_deploy.parity.check",
    "AttnDeployError": "attn_deploy.errors", "UserError": "attn_deploy.errors", "GateFailed": "attn_deploy.errors",
}

__all__ = [
    "AttnDeployError", "BuildOptions", "CalibOptions", "ExportSpec", "GateFailed", "Gates", "NmsOptions",
    "ParityOptions", "ShipOptions", "ShipResult", "UserError", "__version__", "build_engine", "calibrate",
    "check_parity", "export_model", "lint_onnx", "load_model", "runner_for", "ship",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from attn_deploy.calib.calibrate import CalibOptions, calibrate
    from attn_deploy.engines import runner_for
    from attn_deploy.engines.build import BuildOptions, build_engine
    from attn_deploy.errors import AttnDeployError, GateFailed, UserError
    from attn_deploy.exporter import ExportSpec, NmsOptions, export_model, lint_onnx
    from attn_deploy.models import load_model
    from attn_deploy.parity.check import Gates, ParityOptions, check_parity
    from attn_deploy.shipping import ShipOptions, ShipResult, ship


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'attn_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
