"""Export: PyTorch -> ONNX, graph clean-up, the TensorRT-compatibility lint, FP16 conversion.

The names below load on first use (PEP 562): ``attn_deploy.exporter.nms`` alone (what the
post-processing of a served model needs) imports neither torch nor the exporter."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_API = {"ExportResult": "export", "export_model": "export", "LintReport": "lint", "lint_onnx": "lint",
        "NmsOptions": "nms", "ExportSpec": "torch2onnx"}
__all__ = ["ExportResult", "ExportSpec", "LintReport", "NmsOptions", "export_model", "lint_onnx"]

if TYPE_CHECKING:
    from attn_deploy.exporter.export import ExportResult, export_model
    from attn_deploy.exporter.lint import LintReport, lint_onnx
    from attn_deploy.exporter.nms import NmsOptions
    from attn_deploy.exporter.torch2onnx import ExportSpec


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'attn_deploy.exporter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"attn_deploy.exporter.{_API[name]}"), name)
    globals()[name] = value
    return value
