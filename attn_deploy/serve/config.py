"""Triton model configurations, built as ``ModelConfig`` protobuf messages (never a template).

The message class is Triton's own (``tritonclient.grpc.model_config_pb2``); a config is
written with protobuf's text format and parsed back before it is kept, so what lands on disk
is what Triton will read. ``check_config`` holds a parsed config against the graph it serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from attn_deploy.errors import UserError

# numpy dtype name (as the sidecar records it) -> Triton's DataType name
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "bool": "TYPE_BOOL", "float64": "TYPE_FP64"}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a model name Triton takes as a folder name


def pb() -> Any:
    """Triton's ModelConfig protobuf module (from tritonclient, the serve extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise UserError("serving needs tritonclient: pip install 'tritonclient[http,grpc]'") from e
    return model_config_pb2


@dataclass(frozen=True)
class Tensor:
    """One model input or output: its name, numpy dtype name and dims without the batch axis."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def triton_type(self) -> str:
        if self.dtype not in TRITON_TYPES:
            raise UserError(f"tensor {self.name!r} has dtype {self.dtype}, which Triton configs do not take")
        return TRITON_TYPES[self.dtype]


def check_name(name: str) -> str:
    if not NAME.match(name) or name in (".", ".."):
        raise UserError(f"model name {name[:60]!r} is not one Triton takes",
                        "letters, digits, '_', '-' and '.', not starting with '.' or '-', at most 128")
    return name


def model_config(name: str, inputs: list[Tensor], outputs: list[Tensor], max_batch: int, *,
                 platform: str = "", backend: str = "", instances: int = 1, kind: str = "KIND_AUTO",
                 queue_delay_us: int | None = None, parameters: dict[str, str] | None = None) -> Any:
    """One model's ModelConfig; dynamic batching when ``queue_delay_us`` is given."""
    m = pb()
    cfg = m.ModelConfig(name=name, platform=platform, backend=backend, max_batch_size=max_batch)
    for t in inputs:
        cfg.input.add(name=t.name, data_type=m.DataType.Value(t.triton_type()), dims=list(t.dims))
    for t in outputs:
        cfg.output.add(name=t.name, data_type=m.DataType.Value(t.triton_type()), dims=list(t.dims))
    cfg.instance_group.add(count=instances, kind=m.ModelInstanceGroup.Kind.Value(kind))
    if queue_delay_us is not None:
        cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    for key, value in (parameters or {}).items():
        cfg.parameters[key].string_value = value
    return cfg


def ensemble_config(name: str, inputs: list[Tensor], outputs: list[Tensor], max_batch: int,
                    steps: list[tuple[str, dict[str, str], dict[str, str]]]) -> Any:
    """An ensemble: ``steps`` are (model, {its input: ensemble tensor}, {its output: ensemble tensor})."""
    m = pb()
    cfg = m.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch)
    for t in inputs:
        cfg.input.add(name=t.name, data_type=m.DataType.Value(t.triton_type()), dims=list(t.dims))
    for t in outputs:
        cfg.output.add(name=t.name, data_type=m.DataType.Value(t.triton_type()), dims=list(t.dims))
    for model, ins, outs in steps:
        step = cfg.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for k, v in ins.items():
            step.input_map[k] = v
        for k, v in outs.items():
            step.output_map[k] = v
    return cfg


def to_text(cfg: Any) -> str:
    """The text format Triton reads, checked by parsing it back into an equal message."""
    from google.protobuf import text_format

    text = text_format.MessageToString(cfg)
    if parse(text) != cfg:
        raise AssertionError(f"config {cfg.name} does not survive its own text format")  # a bug, never input
    return text


def parse(text: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, pb().ModelConfig())


def check_config(cfg: Any, inputs: list[Tensor], outputs: list[Tensor], max_batch: int) -> list[str]:
    """What in a parsed config disagrees with the graph it serves (empty: every field agrees)."""
    m = pb()
    problems = []
    if cfg.max_batch_size != max_batch:
        problems.append(f"max_batch_size {cfg.max_batch_size}, expected {max_batch}")
    for kind, got, want in (("input", cfg.input, inputs), ("output", cfg.output, outputs)):
        have = {t.name: (m.DataType.Name(t.data_type), tuple(t.dims)) for t in got}
        need = {t.name: (t.triton_type(), t.dims) for t in want}
        if have != need:
            problems.append(f"{kind}s {have} != {need}")
    return problems
