"""Reading an ONNX file that a user hands us: is it a model at all, and a valid graph?

Every verb that takes an ONNX file reads it here, so an empty file, a text file, a truncated
protobuf or a graph whose node reads a tensor that nothing produces is refused in one line
before ONNX Runtime, Model Optimizer or TensorRT see it (their own messages run to
paragraphs, and protobuf parses many non-ONNX files as an empty model without complaint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attn_deploy.errors import UserError, one_line

PROTOBUF_LIMIT = 2**31 - 1  # past 2 GiB the checker must read the file, not the proto


def read_onnx(path: str | Path, check: bool = True) -> Any:
    """The ModelProto of ``path`` (external data not loaded), checked by ``check_onnx``."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file not found: {p}")
    if p.stat().st_size == 0:
        raise UserError(f"{p} is empty, not an ONNX model")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends, OSError
        raise UserError(f"{p} is not an ONNX model (protobuf cannot parse it)", detail=str(e)) from e
    if not proto.HasField("graph") or not proto.opset_import or not proto.ir_version:
        raise UserError(f"{p} is not an ONNX model (no graph, opset or IR version in it)")
    if check:
        check_onnx(proto, p)
    return proto


def check_onnx(proto: Any, where: str | Path) -> None:
    """ONNX's own checker; the full check (strict shape inference) where every op is a
    standard one (a custom domain's ops have no schema to infer with: lint reports those)."""
    import onnx

    big = proto.ByteSize() > PROTOBUF_LIMIT and isinstance(where, Path)
    try:
        onnx.checker.check_model(str(where) if big else proto)
    except Exception as e:  # noqa: BLE001 - ValidationError, and C++ errors on odd protos
        raise UserError(f"{where} is not a valid ONNX graph: {one_line(str(e), 150)}", detail=str(e)) from e
    if big or any(n.domain not in ("", "ai.onnx") for n in proto.graph.node):
        return
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001 - InferenceError: shapes or types that do not fit
        raise UserError(f"{where} is not a valid ONNX graph: {one_line(str(e), 150)}", detail=str(e)) from e
