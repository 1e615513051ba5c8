"""Engines: one runner interface over PyTorch, ONNX Runtime and TensorRT; build and bench."""

from __future__ import annotations

from pathlib import Path

from attn_deploy.engines.base import Runner, TensorSpec
from attn_deploy.engines.onnxrt import OnnxrtRunner
from attn_deploy.engines.torch_runner import TorchRunner
from attn_deploy.errors import UserError

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def runner_for(path: str | Path) -> Runner:
    """The runner for a deployable file, chosen by its suffix."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from attn_deploy.onnxfile import read_onnx

        read_onnx(p)  # refused in one line here, before ONNX Runtime's paragraph
        return OnnxrtRunner(p)
    if suffix in ENGINE_SUFFIXES:
        from attn_deploy.engines.trt import TrtRunner

        return TrtRunner(p)
    raise UserError(f"{p}: unknown model file type {suffix!r} (expected .onnx or a TensorRT .engine)")


__all__ = ["OnnxrtRunner", "Runner", "TensorSpec", "TorchRunner", "runner_for"]
