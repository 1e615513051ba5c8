"""Reading an ONNX file that a user hands us: is it a model at all, and a valid graph?

Every verb that takes an ONNX file reads it here, so an empty file, a text file, a truncated
protobuf or a graph whose node reads a tensor that nothing produces is refused in one line
before ONNX Runtime, Model Optimizer or TensorRT see it (their own messages run to
paragraphs, and protobuf parses many non-ONNX files as an empty model without complaint).
"""

from __future__ import annotations

import re
from math import prod
from pathlib import Path
from typing import Any

from attn_deploy.errors import UserError, one_line

LAYER_SCOPE = re.compile(r"^/model\.(\d+)/")  # the exporter names nodes by module path: /model.9/conv_h/Conv
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


def layer_of(node_name: str) -> int | None:
    """The yaml layer a node of our export belongs to (its ``/model.N/`` scope), or None."""
    m = LAYER_SCOPE.match(node_name)
    return int(m.group(1)) if m else None


COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def node_macs(model: Any) -> dict[str, int]:
    """Multiply-accumulates of every Conv, ConvTranspose, MatMul and Gemm of a float graph, by node name."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE:
            continue
        y, a = shapes.get(node.output[0]), shapes.get(node.input[0])
        b = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if not y or not b or not all(y) or not all(b):
            continue
        if node.op_type == "Conv":
            out[node.name] = prod(y) * prod(b[1:])  # weight (C_out, C_in / groups, kh, kw)
        elif node.op_type == "ConvTranspose":
            out[node.name] = prod(a or [0]) * prod(b[1:])
        else:  # MatMul, Gemm: the shared dimension of the two inputs
            shared = b[-2] if node.op_type == "MatMul" or not _attr(node, "transB") else b[-1]
            out[node.name] = prod(y) * shared
    return out


def _attr(node: Any, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)
