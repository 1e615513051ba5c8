"""Engines: one runner interface over PyTorch, ONNX Runtime and TensorRT; build and bench."""

from __future__ import annotations

from attn_deploy.engines.base import Runner
from attn_deploy.engines.onnxrt import OnnxrtRunner
from attn_deploy.engines.torch_runner import TorchRunner

__all__ = ["OnnxrtRunner", "Runner", "TorchRunner"]
