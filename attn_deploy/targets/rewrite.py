"""Rewrites of ONNX nodes that a target's parser does not take, into ops it does.

The parser rewrites are exact by construction (the DLA forms below up to float rounding), and
every one is checked again where it is used: ``export --target`` rewrites the graph before its
ONNX Runtime parity check against PyTorch, so a rewrite that changed a result would fail the
export. Only a node the target's parser table
refuses (or does not know) is rewritten; a graph for a target that takes it is left as it is.

- ``Mod`` (integer, Python's sign rule or C's): TensorRT 8.2's parser has no Mod (YOLO26's
  one-to-one head takes a class index as ``index % classes``). ``a - b * (a / b)`` with ONNX's
  truncating integer Div gives C's remainder; Python's (``fmod=0``) adds ``b`` where that
  remainder and ``b`` have opposite signs.
- ``LayerNormalization`` (opset 17): not in 8.2's table, refused by 8.5's. Written out as the
  ONNX operator's definition: mean and biased variance over the axes from ``axis`` on, in the
  input's type.

For a target with a DLA, the forms of our attention modules' reductions that the DLA runs
(``targets/dla.py``): a mean or max over H and/or W of a fixed-size N, C, H, W tensor
(``GlobalAveragePool``, ``ReduceMean``/``ReduceMax`` with those axes: SE, ECA, CBAM's channel
branch, Coordinate Attention's strip pools) becomes a chain of average or max pools whose
windows multiply to the extent, each at most 8 (the DLA's window limit): 20 = 5 x 4, 40 = 8 x 5;
an extent with a prime factor above 8 keeps its Reduce. A max of maxes is the max; a mean of
equal-sized means is the mean (float rounding apart, which the parity check bounds). And a
``Div`` by a constant, which the DLA's element-wise layer lacks before TensorRT 11, becomes a
``Mul`` by its reciprocal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attn_deploy.onnxfile import GraphFacts
from attn_deploy.targets import OpSupport, Target

INTEGER_TYPES = {6, 7}  # INT32, INT64 (TensorProto)


@dataclass(frozen=True)
class Rewrite:
    node: str
    op: str
    into: str  # the ops written instead

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "op": self.op, "into": self.into}


class Builder:
    """New nodes named after the node they replace, in graph order."""

    def __init__(self, proto: Any, base: str) -> None:
        self.proto, self.base, self.nodes, self.count = proto, base, [], 0

    def const(self, value: Any, dtype: Any) -> str:
        import numpy as np
        from onnx import numpy_helper

        name = self._name("const")
        self.proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or self._name(op_type)
        self.count += 1
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.base}/{op_type}_{self.count}", **attrs))
        return out

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.base}/{what}_{self.count}_output"


def _mod(proto: Any, node: Any, info: GraphFacts) -> list[Any] | None:
    """Integer Mod as Div, Mul, Sub (and for Python's rule a sign fix); None for a float Mod."""
    import numpy as np
    from onnx import helper

    dtype = info.types.get(node.input[0])
    if dtype not in INTEGER_TYPES:
        return None
    np_type = np.int64 if dtype == 7 else np.int32
    fmod = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "fmod"), 0)
    b = Builder(proto, node.name or node.output[0])
    a_in, d_in = node.input[0], node.input[1]
    quotient = b.op("Div", [a_in, d_in])
    rem = b.op("Sub", [a_in, b.op("Mul", [d_in, quotient])], None if not fmod else node.output[0])
    if not fmod:  # Python's rule: the remainder takes the divisor's sign
        opposite = b.op("Less", [b.op("Mul", [rem, d_in]), b.const(0, np_type)])
        fix = b.op("Mul", [b.op("Cast", [opposite], to=dtype), d_in])
        b.op("Add", [rem, fix], node.output[0])
    return b.nodes


def _layer_norm(proto: Any, node: Any, info: GraphFacts) -> list[Any] | None:
    """LayerNormalization (one output) as ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add."""
    import numpy as np
    from onnx import helper

    if len([o for o in node.output if o]) > 1:
        return None  # Mean / InvStdDev outputs asked for: not written out here
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis, eps = int(attrs.get("axis", -1)), float(attrs.get("epsilon", 1e-5))
    shape = info.shapes.get(node.input[0])
    if shape is None:
        return None
    rank = len(shape)
    axes = list(range(axis % rank, rank))
    np_type = {1: np.float32, 10: np.float16}.get(info.types.get(node.input[0], 1))
    if np_type is None:
        return None
    b = Builder(proto, node.name or node.output[0])

    def mean(x: str) -> str:
        if (info.opset or 0) >= 18:
            return b.op("ReduceMean", [x, b.const(axes, np.int64)], keepdims=1)
        return b.op("ReduceMean", [x], axes=axes, keepdims=1)

    centred = b.op("Sub", [node.input[0], mean(node.input[0])])
    var = mean(b.op("Mul", [centred, centred]))
    std = b.op("Sqrt", [b.op("Add", [var, b.const(eps, np_type)])])
    out = b.op("Mul", [b.op("Div", [centred, std]), node.input[1]], None if len(node.input) > 2 and node.input[2] else node.output[0])
    if len(node.input) > 2 and node.input[2]:
        b.op("Add", [out, node.input[2]], node.output[0])
    return b.nodes


REWRITES: dict[str, tuple[str, Callable[[Any, Any, GraphFacts], list[Any] | None]]] = {
    "Mod": ("Div, Mul, Sub (Less, Cast, Add for the sign)", _mod),
    "LayerNormalization": ("ReduceMean, Sub, Mul, Add, Sqrt, Div", _layer_norm),
}


def rewrite_for(proto: Any, table: dict[str, OpSupport], target: Target | None = None) -> list[Rewrite]:
    """Rewrite, in place, every node ``table`` refuses and a rewrite exists for, and with a DLA on
    ``target`` the reductions and divisions the DLA would send back to the GPU; returns what
    was done. Nodes refused with no rewrite are left for lint to name."""
    dla = target is not None and target.dla is not None
    wanted = {op: rw for op, rw in REWRITES.items() if not _takes(table, op)}
    if dla:
        wanted.update(DLA_REWRITES if target.version < (11,) else {k: v for k, v in DLA_REWRITES.items() if k != "Div"})
    if not any(n.op_type in wanted for n in proto.graph.node):
        return []
    info = GraphFacts.of(proto)
    done, nodes = [], []
    for node in list(proto.graph.node):
        into, fn = wanted.get(node.op_type, ("", None))
        new = fn(proto, node, info) if fn is not None else None
        if new is None:
            nodes.append(node)
        else:
            nodes.extend(new)
            done.append(Rewrite(node.name or node.output[0], node.op_type, into))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return done


def _pool_windows(extent: int, top: int = 8) -> list[int] | None:
    """Windows of at most ``top`` whose product is ``extent`` (largest first), or None."""
    out, rest = [], extent
    while rest > 1:
        w = next((f for f in range(top, 1, -1) if rest % f == 0), None)
        if w is None:
            return None
        out.append(w)
        rest //= w
    return out


def _reduce_axes(node: Any, info: GraphFacts) -> list[int] | None:
    """The spatial axes (2, 3) a 4-D reduction with kept dimensions runs over, or None."""
    import numpy as np
    from onnx import helper

    if node.op_type.startswith("Global"):
        return [2, 3]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if not attrs.get("keepdims", 1):
        return None
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = info.consts.get(node.input[1])
    if axes is None:
        return None
    axes = sorted({int(a) % 4 for a in np.ravel(axes)})
    return axes if axes and set(axes) <= {2, 3} else None


def _as_pools(proto: Any, node: Any, info: GraphFacts) -> list[Any] | None:
    """A spatial mean or max as average or max pools of windows at most 8 (module text)."""
    shape = info.shapes.get(node.input[0])
    axes = _reduce_axes(node, info)
    if axes is None or not shape or len(shape) != 4 or any(not d for d in shape):
        return None
    per_axis = {a: _pool_windows(shape[a]) if a in axes else [] for a in (2, 3)}
    if any(w is None for w in per_axis.values()):
        return None
    steps = max(len(w) for w in per_axis.values())
    if steps == 0:
        return None
    pool = "MaxPool" if node.op_type in ("ReduceMax", "GlobalMaxPool") else "AveragePool"
    b = Builder(proto, node.name or node.output[0])
    x = node.input[0]
    for i in range(steps):
        kernel = [per_axis[a][i] if i < len(per_axis[a]) else 1 for a in (2, 3)]
        x = b.op(pool, [x], node.output[0] if i == steps - 1 else None, kernel_shape=kernel, strides=kernel)
    return b.nodes


def _div_const(proto: Any, node: Any, info: GraphFacts) -> list[Any] | None:
    """x / c with a constant c as x * (1 / c), in c's type."""
    import numpy as np

    c = info.consts.get(node.input[1])
    if c is None or not np.issubdtype(c.dtype, np.floating) or not np.all(c != 0):
        return None
    b = Builder(proto, node.name or node.output[0])
    b.op("Mul", [node.input[0], b.const((1 / c.astype(np.float64)).astype(c.dtype), c.dtype)], node.output[0])
    return b.nodes


# for a DLA: what the DLA's layers run instead (module text)
DLA_REWRITES: dict[str, tuple[str, Callable[[Any, Any, GraphFacts], list[Any] | None]]] = {
    "GlobalAveragePool": ("AveragePool windows of at most 8", _as_pools),
    "ReduceMean": ("AveragePool windows of at most 8", _as_pools),
    "GlobalMaxPool": ("MaxPool windows of at most 8", _as_pools),
    "ReduceMax": ("MaxPool windows of at most 8", _as_pools),
    "Div": ("Mul by the reciprocal", _div_const),
}


def _takes(table: dict[str, OpSupport], op: str) -> bool:
    spec = table.get(op)
    return spec is not None and spec.supported
