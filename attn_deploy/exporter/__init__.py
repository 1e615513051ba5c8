"""Export: PyTorch -> ONNX, graph clean-up, the TensorRT-compatibility lint, FP16 conversion."""

from __future__ import annotations

from attn_deploy.exporter.export import ExportResult, export_model
from attn_deploy.exporter.lint import LintReport, lint_onnx
from attn_deploy.exporter.nms import NmsOptions
from attn_deploy.exporter.torch2onnx import ExportSpec

__all__ = ["ExportResult", "ExportSpec", "LintReport", "NmsOptions", "export_model", "lint_onnx"]
