"""Keeping node groups out of INT8 by editing one calibrated Q/DQ graph, not by calibrating again.

Model Optimizer quantizes a node by putting QuantizeLinear -> DequantizeLinear on its inputs
(activations and weights); one pair on a tensor is shared by every quantized reader of it.
Keeping a node out of INT8 is then: its inputs read the tensors before their Q/DQ again, and
a pair that no node reads any more goes. Every other pair, its scale and zero point stay as
they are. Calibration measures ranges on the float graph, whatever is quantized afterwards,
so the result is the graph ``quantize(..., nodes_to_exclude=nodes)`` writes, in milliseconds
instead of a calibration run (measured on the demos: the same pairs, the same scales, the
same mAP to the last digit), except around a Concat kept out: quantized, a Concat shares one
scale with its inputs, so an input that also feeds another layer keeps that shared scale
here where a new calibration gives it its own; and Model Optimizer leaves a pair on one input
of a Concat it was told to exclude, which this edit removes.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

QDQ = ("QuantizeLinear", "DequantizeLinear")


def quantized_inputs(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """(tensor before its Q/DQ pair, node reading it through the pair) for every quantized input."""
    made = {o: n for n in model.graph.node for o in n.output}
    out = set()
    for node in model.graph.node:
        for t in node.input:
            dq = made.get(t)
            if dq is not None and dq.op_type == "DequantizeLinear" and node.op_type not in QDQ:
                q = made.get(dq.input[0])
                out.add((q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0], node.name))
    return out


def keep_out(model: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of the Q/DQ ``model`` with ``nodes`` reading unquantized inputs; pairs and
    initializers nothing reads any more are removed, nothing else changes."""
    names = set(nodes)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    made = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name not in names:
            continue
        for k, t in enumerate(node.input):
            dq = made.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = made.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
    _drop_unread(graph)
    return out


def _drop_unread(graph: onnx.GraphProto) -> None:
    while True:
        read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in QDQ and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    made = {t for n in graph.node for t in n.output}
    for field, keep in ((graph.initializer, lambda v: v.name in read), (graph.value_info, lambda v: v.name in made)):
        kept = [v for v in field if keep(v)]
        if len(kept) != len(field):
            del field[:]
            field.extend(kept)
