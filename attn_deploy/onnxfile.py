"""Reading an ONNX file that a user hands us: is it a model at all, and a valid graph?

Every verb that takes an ONNX file reads it here, so an empty file, a text file, a truncated
protobuf or a graph whose node reads a tensor that nothing produces is refused in one line
before ONNX Runtime, Model Optimizer or TensorRT see it (their own messages run to
paragraphs, and protobuf parses many non-ONNX files as an empty model without complaint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


def node_macs(model: Any, facts: "GraphFacts | None" = None) -> dict[str, int]:
    """Multiply-accumulates of every Conv, ConvTranspose, MatMul and Gemm of a float graph, by
    node name (``facts``: the graph's, when the caller has them)."""
    shapes = (facts or GraphFacts.of(model)).shapes
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
            out[node.name] = (prod(a) if a and all(a) else 0) * prod(b[1:])
        else:  # MatMul, Gemm: the shared dimension of the two inputs
            shared = b[-2] if node.op_type == "MatMul" or not _attr(node, "transB") else b[-1]
            out[node.name] = prod(y) * shared
    return out


SMALL_CONSTANT = 4096  # elements: a constant read as values (axes, K, scales), not a weight


@dataclass(frozen=True)
class GraphFacts:
    """What shape inference and the constants say about a graph's tensors, read once for every
    check that needs them (lint, DLA placement, rewrites, MAC counts): each tensor's element type
    (TensorProto's number), its shape (an int per dimension, None where not fixed), the values
    of the small constants (initializers and Constant nodes; a larger one maps to None, so its
    name still says "constant" without its weights being copied), each tensor's producer, and
    the default-domain opset."""

    types: dict[str, int]
    shapes: dict[str, list[int | None]]
    consts: dict[str, Any]
    producer: dict[str, Any]
    opset: int | None

    @classmethod
    def of(cls, proto: Any) -> "GraphFacts":
        import onnx
        from onnx import numpy_helper

        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - then what the file declares
            inferred = proto
        types: dict[str, int] = {}
        shapes: dict[str, list[int | None]] = {}
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            tt = v.type.tensor_type
            if tt.elem_type:
                types[v.name] = tt.elem_type
            if tt.HasField("shape"):
                shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        consts: dict[str, Any] = {}
        for t in proto.graph.initializer:
            types[t.name], shapes[t.name] = t.data_type, list(t.dims)
            consts[t.name] = numpy_helper.to_array(t) if prod(t.dims) <= SMALL_CONSTANT else None
        for n in proto.graph.node:
            if n.op_type == "Constant":
                value = next((a.t for a in n.attribute if a.name == "value"), None)
                small = value is not None and prod(value.dims) <= SMALL_CONSTANT
                consts[n.output[0]] = numpy_helper.to_array(value) if small else None
        producer = {o: n for n in proto.graph.node for o in n.output}
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return cls(types, shapes, consts, producer, opset)

    def constant(self, name: str) -> bool:
        """A constant, or a constant read through DequantizeLinear (a Q/DQ graph's weights)."""
        if name in self.consts:
            return True
        p = self.producer.get(name)
        return p is not None and p.op_type in ("DequantizeLinear", "QuantizeLinear", "Identity") and self.constant(p.input[0])


def _attr(node: Any, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)
