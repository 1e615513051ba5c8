"""Where each yaml layer begins and ends in an ONNX graph we wrote.

The exporter names every node by its module path (``/model.9/conv_h/Conv``), so layer i's
nodes are those in the ``/model.i/`` scope. Its output is the one tensor a node of that scope
produces and something outside the scope reads (or the graph's output); its inputs are the
outputs of the layers its yaml row takes ``from``. Quantize/Dequantize pairs and Casts that
``calib`` inserts (scoped or not) are looked through: the boundary is the tensor *before* any
QuantizeLinear or Cast, the one PyTorch's layer output corresponds to.

This table is the one way attn-deploy runs a model's layers apart: ``calib`` picks its
precision groups from the scopes, ``parity --per-block`` reads and extracts the boundaries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import onnx

from attn_deploy.onnxfile import layer_of

GRAPH_INPUT = "images"
# inserted between layers by calib (Model Optimizer's Q/DQ, AutoCast's casts); never a layer's own
TRANSPARENT = {"QuantizeLinear", "DequantizeLinear", "Cast"}


@dataclass(frozen=True)
class LayerBoundary:
    index: int
    module: str
    attention: bool
    sources: tuple[int, ...]  # the yaml row's 'from', with -1 resolved to the previous layer
    output: str  # the ONNX tensor holding the layer's output
    inputs: tuple[str, ...]  # the ONNX tensors the layer reads, in 'from' order

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": list(self.sources), "inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "LayerBoundary":
        return cls(int(doc["index"]), str(doc["module"]), bool(doc.get("attention")),
                   tuple(int(s) for s in doc["sources"]), str(doc["output"]), tuple(str(t) for t in doc["inputs"]))


@dataclass(frozen=True)
class LayerRow:
    """What the model says about one layer: its index, class, attention or not, its 'from'."""

    index: int
    module: str
    attention: bool
    sources: tuple[int, ...]

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "LayerRow":
        return cls(int(doc["index"]), str(doc["module"]), bool(doc.get("attention")), tuple(int(s) for s in doc["sources"]))


def scope_of(node: onnx.NodeProto) -> int | None:
    return layer_of(node.name)


def split_merged_concats(graph: onnx.GraphProto) -> int:
    """Give back their own output to layers that end in a Concat read by a Concat row.

    The TorchScript exporter flattens ``cat([cat([a, b]), c])`` into one Concat, so such a
    layer (a Ghost convolution before YOLOv5's Concat) has no tensor of its own: per-block
    parity and calib need one. Two or more consecutive inputs of a Concat made by another
    layer's nodes are concatenated again in that layer's scope (TensorRT fuses concats into
    one buffer, so this costs nothing there). Returns how many were split.
    """
    producer = {t: n for n in graph.node for t in n.output}
    done = 0
    for node in list(graph.node):
        here = scope_of(node)
        if node.op_type != "Concat" or here is None:
            continue
        scopes = [scope_of(producer[t]) if t in producer else None for t in node.input]
        start = 0
        while start < len(scopes):
            end = start
            while end + 1 < len(scopes) and scopes[end + 1] == scopes[start]:
                end += 1
            owner = scopes[start]
            if end > start and owner is not None and owner != here:
                name = f"/model.{owner}/Concat_layer_output"
                inputs = list(node.input[start:end + 1])
                joined = onnx.helper.make_node("Concat", inputs, [f"{name}_0"], name=name,
                                               axis=next(a.i for a in node.attribute if a.name == "axis"))
                graph.node.insert(list(graph.node).index(node), joined)
                del node.input[start:end + 1]
                node.input.insert(start, f"{name}_0")
                scopes[start:end + 1] = [owner]
                done += 1
            start += 1
    return done


def layer_nodes(model: onnx.ModelProto) -> dict[int, list[str]]:
    """Node names per yaml layer, from their ``/model.<i>/`` scope."""
    out: dict[int, list[str]] = {}
    for node in model.graph.node:
        i = scope_of(node)
        if i is not None:
            out.setdefault(i, []).append(node.name)
    return out


def is_attention(m: Any) -> bool:
    """Our attention modules, and blocks with self-attention inside: YOLO11/YOLO26's C2PSA,
    YOLO26's C3k2 with a PSA block, YOLO12's A2C2f with area attention."""
    from attn_deploy.models.anchorfree.area import AAttn
    from attn_deploy.models.anchorfree.psa import Attention
    from attn_deploy.models.attention.base import AttentionModule

    return isinstance(m, AttentionModule) or any(isinstance(s, (Attention, AAttn)) for s in m.modules())


def model_rows(net: Any) -> list[LayerRow]:
    """The layer rows of a detector (YOLOv5 or anchor-free)."""
    rows = []
    for i, m in enumerate(net.model):
        f = m.f if isinstance(m.f, list) else [m.f]
        rows.append(LayerRow(i, type(m).__name__, is_attention(m), tuple(i + j if j < 0 else j for j in f)))
    return rows


def find_boundaries(model: onnx.ModelProto, rows: list[LayerRow]) -> list[LayerBoundary]:
    """Each row's output and input tensors in ``model``; raises ValueError where one is not clear."""
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    def leaves(tensor: str, seen: set[str]) -> set[int | str]:
        """Scopes that read ``tensor``, looking through Q/DQ/Cast; "out" for a graph output."""
        found: set[int | str] = {"out"} if tensor in graph_outputs else set()
        for node in consumers.get(tensor, []):
            if node.op_type in TRANSPARENT:
                for t in node.output:
                    if t not in seen:
                        seen.add(t)
                        found |= leaves(t, seen)
            else:
                found.add(scope_of(node) if scope_of(node) is not None else "other")
        return found

    outputs: dict[int, str] = {}
    for row in rows:
        crossing = [t for node in graph.node if scope_of(node) == row.index and node.op_type not in TRANSPARENT
                    for t in node.output if leaves(t, {t}) - {row.index}]
        if not crossing:  # a layer without nodes of its own (an Identity row) passes its input on
            if len(row.sources) != 1:
                raise ValueError(f"layer {row.index} ({row.module}) has no nodes in the graph")
            crossing = [outputs[row.sources[0]] if row.sources[0] >= 0 else GRAPH_INPUT]
        if len(set(crossing)) != 1:
            raise ValueError(f"layer {row.index} ({row.module}) has {len(set(crossing))} outputs: {sorted(set(crossing))}")
        outputs[row.index] = _graph_output_through_cast(crossing[0], graph)
    return [LayerBoundary(r.index, r.module, r.attention, r.sources, outputs[r.index],
                          tuple(outputs[s] if s >= 0 else GRAPH_INPUT for s in r.sources)) for r in rows]


def _graph_output_through_cast(tensor: str, graph: onnx.GraphProto) -> str:
    """The graph output itself when the layer's tensor only reaches it through a Cast
    (AutoCast keeps float32 outputs that way): it is the tensor users compare."""
    readers = [n for n in graph.node if tensor in n.input]
    outputs = {o.name for o in graph.output}
    if len(readers) == 1 and readers[0].op_type == "Cast" and readers[0].output[0] in outputs:
        return readers[0].output[0]
    return tensor


def boundaries_for(model: onnx.ModelProto, sidecar: dict[str, Any] | None, rows: list[LayerRow] | None = None) -> list[LayerBoundary]:
    """The sidecar's recorded boundaries when every tensor is still in ``model``; otherwise
    found again from the scopes (with ``rows``, or the sidecar's own rows)."""
    recorded = [LayerBoundary.from_dict(d) for d in (sidecar or {}).get("layers", []) if "output" in d]
    names = {t for n in model.graph.node for t in n.output} | {i.name for i in model.graph.input}
    if recorded and all(b.output in names and set(b.inputs) <= names for b in recorded):
        return recorded
    if rows is None:
        rows = [LayerRow(b.index, b.module, b.attention, b.sources) for b in recorded]
    if not rows:
        raise ValueError("no layer table: the ONNX has no attn-deploy sidecar and no model was given")
    return find_boundaries(model, rows)
