"""ONNX Runtime on the CPU, the reference every exported graph is checked with here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attn_deploy.engines.base import Runner, TensorSpec
from attn_deploy.errors import UserError, library_text


class OnnxrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: bytes | str | Path, threads: int | None = None, spinning: bool = True) -> None:
        """``spinning=False`` stops idle worker threads from busy-waiting between runs, which
        matters when several sessions (or torch) take turns on the same cores."""
        super().__init__()
        self.model = model
        self.threads = threads
        self.spinning = spinning
        self.session = None

    def activate_impl(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: its graph-optimiser notes (fp16 folding) are not the user's
        if self.threads:
            opts.intra_op_num_threads = self.threads
        if not self.spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = self.model if isinstance(self.model, bytes) else str(self.model)
        try:
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise UserError(f"ONNX Runtime cannot load {self._label()}: {library_text(e, 120)}", detail=str(e)) from e

    def _label(self) -> str:
        return "the model" if isinstance(self.model, bytes) else str(self.model)

    def deactivate_impl(self) -> None:
        self.session = None

    def inputs(self) -> list[TensorSpec]:
        self.activate()
        return [TensorSpec(i.name, tuple(i.shape), _numpy_type(i.type)) for i in self.session.get_inputs()]

    def output_names(self) -> list[str]:
        self.activate()
        return [o.name for o in self.session.get_outputs()]

    def run_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, {k: feed[k] for k in self.input_names()})
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's Fail/InvalidArgument: the graph does not take this input
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
            raise UserError(f"ONNX Runtime cannot run {self._label()} on {shapes[:80]}: {library_text(e, 100)}",
                            detail=str(e)) from e
        return dict(zip(self.output_names(), outs))


def _numpy_type(onnx_type: str) -> str:
    """ONNX Runtime's 'tensor(float)' -> numpy's 'float32'."""
    inner = onnx_type.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(inner, inner)
