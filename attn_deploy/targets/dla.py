"""Where each node of a graph would run on a target with a DLA: on the DLA, or back on the GPU.

TensorRT puts a layer on the DLA only if the DLA has that layer kind and its parameters are in
the DLA's ranges; with GPU fallback on, every other layer silently runs on the GPU, and each
tensor that crosses between the two is a copy. This module decides that per ONNX node before
any device is at hand, from NVIDIA's own statements (``RULES_SOURCE``):

- the DLA layer comments of TensorRT's ``NvInfer.h`` (release/8.6 and 10.7): Convolution
  (kernel 1-32, stride 1-8, padding 0-31 and below the kernel, dilation 1-32, at most 8192
  output maps and groups), Deconvolution (kernel and stride 1-32, no padding, one group),
  Pooling (max or average, window 1-8, stride 1-16, padding 0-7; on Xavier average pooling
  counts its padding), Activation (ReLU, Sigmoid, TanH, Clip; Leaky ReLU in the layer table),
  ElementWise (sum, product, max, min, sub), Concatenation on the channel axis, Resize (nearest
  with asymmetric/floor, linear with half-pixel; integer scales 1-32 nearest, 1-4 linear, only
  on H and W), SoftMax (not on Xavier; on Orin over C, H or W, at most 1024 elements there),
  Slice (static, stride 1, not on the batch axis), Gather: none;
- the DLA layer support table of the TensorRT documentation: every layer's tensors are 4-D
  (N, C, H, W), non-batch dimensions at most 8192, batch at most 4096, no dynamic dimensions,
  FP16 and INT8 only; Div and Pow joined ElementWise in later releases (TensorRT 11 here);
- NVIDIA's Deep-Learning-Accelerator-SW operator table for the ONNX ops TensorRT maps to no DLA
  layer at all (GlobalAveragePool and ReduceMean go to the Reduce layer, which the DLA lacks;
  Squeeze, Unsqueeze, Flatten, Expand, Exp, Sqrt, HardSigmoid, HardSwish ... "see RFE"), and
  MatMul/Gemm only with a constant second input (a fully connected layer).

What is not decidable from the graph (the convolution buffer heuristic of TensorRT 8.6 and
later, INT8 ranges that must match across a pooling or an element-wise layer) is left to
TensorRT: a node judged "DLA" here can still fall back, never the other way round.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attn_deploy.onnxfile import GraphFacts, layer_of, node_macs

if TYPE_CHECKING:
    from attn_deploy.targets import Target

RULES_SOURCE = ("NVIDIA/TensorRT include/NvInfer.h DLA comments (release/8.6, release/10.7); TensorRT "
                "documentation, DLA layer support table; NVIDIA/Deep-Learning-Accelerator-SW operators/README.md")
MAX_DIM, MAX_BATCH = 8192, 4096
# ONNX ops that are no layer of their own: folded into weights and scales, or names only
NO_LAYER = {"Constant", "Identity", "QuantizeLinear", "DequantizeLinear", "Dropout"}
ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Max", "Min", "Sum"}
LATER_ELEMENTWISE = {"Div", "Pow"}  # in the DLA layer table of TensorRT 11's documentation, not in 8.x/10.x headers
SHUFFLE = {"Reshape", "Transpose"}


@dataclass
class Placement:
    node: str
    op: str
    layer: int | None
    dla: bool
    why: str = ""  # why not on the DLA
    macs: int = 0


@dataclass
class DlaReport:
    """Per node: DLA or GPU; the switches between them; the share of the MACs on the DLA."""

    target: str
    dla: str
    placements: list[Placement] = field(default_factory=list)
    switches: int = 0  # tensors that cross between the DLA and the GPU (each one a copy)
    subgraphs: int = 0  # separate DLA pieces (TensorRT loads one DLA loadable per piece)
    refused: str = ""  # a reason nothing can run on the DLA at all

    @property
    def macs(self) -> int:
        return sum(p.macs for p in self.placements)

    @property
    def dla_macs(self) -> int:
        return sum(p.macs for p in self.placements if p.dla)

    @property
    def share(self) -> float:
        return self.dla_macs / self.macs if self.macs else 0.0

    def fallbacks(self) -> list[Placement]:
        return [p for p in self.placements if not p.dla]

    def by_layer(self, modules: dict[int, str] | None = None) -> list[dict[str, Any]]:
        """Per yaml layer: nodes on the DLA of all, MACs share on the DLA, what falls back."""
        rows: dict[int | None, list[Placement]] = defaultdict(list)
        for p in self.placements:
            rows[p.layer].append(p)
        out = []
        for layer in sorted(rows, key=lambda k: (k is None, k if k is not None else 0)):
            ps = rows[layer]
            macs = sum(p.macs for p in ps)
            off = sorted({p.op for p in ps if not p.dla})
            out.append({
                "layer": layer, "module": (modules or {}).get(layer, "") if layer is not None else "(outside layers)",
                "nodes": len(ps), "on_dla": sum(p.dla for p in ps),
                "dla_mac_share": round(sum(p.macs for p in ps if p.dla) / macs, 4) if macs else None,
                "fallback_ops": off,
            })
        return out

    def to_dict(self, modules: dict[int, str] | None = None) -> dict[str, Any]:
        return {
            "target": self.target, "dla": self.dla, "refused": self.refused or None,
            "nodes": len(self.placements), "on_dla": sum(p.dla for p in self.placements),
            "dla_mac_share": round(self.share, 4), "switches": self.switches, "subgraphs": self.subgraphs,
            "fallbacks": [{"node": p.node, "op": p.op, "layer": p.layer, "why": p.why} for p in self.fallbacks()],
            "layers": self.by_layer(modules), "rules": RULES_SOURCE,
        }


def dla_report(model: Any, target: "Target", facts: GraphFacts | None = None) -> DlaReport:
    """Place every node of ``model`` (an ``onnx.ModelProto``) for ``target``'s DLA (``facts``:
    the graph's, when the caller has them)."""
    if target.dla is None:
        raise ValueError(f"{target.name} has no DLA")
    g = facts or GraphFacts.of(model)
    macs = node_macs(model, g)
    report = DlaReport(target.name, target.dla)
    refused = _whole_graph(g, [v.name for v in model.graph.input if v.name not in g.consts])
    for node in model.graph.node:
        if node.op_type in NO_LAYER:
            continue
        why = refused or _why_not(node, g, target)
        report.placements.append(Placement(node.name or node.output[0], node.op_type, layer_of(node.name), not why, why,
                                           macs.get(node.name, 0)))
    report.refused = refused
    report.switches, report.subgraphs = _switches(model, report.placements)
    return report


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _whole_graph(g: GraphFacts, inputs: list[str]) -> str:
    """What keeps every layer off the DLA: dynamic input dimensions, or a batch past the DLA's."""
    for name in inputs:
        shape = g.shapes.get(name) or []
        if any(d is None for d in shape):
            return f"dynamic input '{name}': the DLA takes fixed shapes only (export without --dynamic)"
        if shape and shape[0] > MAX_BATCH:
            return f"batch {shape[0]} above the DLA's {MAX_BATCH}"
    return ""


def _four_d(g: GraphFacts, names: list[str]) -> str:
    for name in names:
        shape = g.shapes.get(name)
        if shape is None:
            continue
        if len(shape) != 4:
            return f"{len(shape)}-D tensor; the DLA's layers take N, C, H, W"
        if any(d is not None and d > MAX_DIM for d in shape[1:]):
            return f"dimension above {MAX_DIM}"
    return ""


def _why_not(node: Any, g: GraphFacts, target: "Target") -> str:
    """Empty when the node can run on the DLA, else why not."""
    op = node.op_type
    data = [i for i in node.input[:1] if i] + [o for o in node.output[:1] if o]
    if op in ("Conv", "ConvTranspose"):
        return _four_d(g, data) or _conv(node, g)
    if op in ("MaxPool", "AveragePool"):
        return _four_d(g, data) or _pool(node, target)
    if op in ACTIVATIONS:
        if op == "PRelu" and not g.constant(node.input[1]):
            return "PRelu's slopes are not a constant"
        return _four_d(g, data)
    if op in ELEMENTWISE or (op in LATER_ELEMENTWISE and target.version >= (11,)):
        operands = [i for i in node.input if i and not g.constant(i)]
        return _four_d(g, operands + data[-1:])
    if op in LATER_ELEMENTWISE:
        return f"{op}: not an element-wise operation of the DLA before TensorRT 11"
    if op == "BatchNormalization":
        return _four_d(g, data)
    if op == "Concat":
        return _four_d(g, [i for i in node.input if i]) or _concat(node, g)
    if op == "Resize":
        return _four_d(g, data) or _resize(node, g, target)
    if op == "Softmax":
        return _softmax(node, g, target)
    if op in ("Slice", "Split"):
        return _four_d(g, data) or _slice(node, g)
    if op in ("MatMul", "Gemm"):
        if not g.constant(node.input[1]):
            return f"{op} of two computed tensors (attention's product): the DLA has only fully connected layers"
        return ""
    if op in SHUFFLE:
        shape_in, shape_out = g.shapes.get(node.input[0]), g.shapes.get(node.output[0])
        if shape_in is not None and shape_out is not None and (len(shape_in) != 4 or len(shape_out) != 4):
            return f"{op} between {len(shape_in)}-D and {len(shape_out)}-D tensors; the DLA's layers are 4-D"
        return ""
    if op in ("GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "GlobalMaxPool"):
        return f"{op} maps to TensorRT's Reduce layer, which the DLA does not run (an average pool with a fixed window up to 8 does)"
    return f"{op}: no DLA layer"


def _ints(node: Any, name: str, n: int, default: int) -> list[int]:
    v = list(_attr(node, name, []) or [])
    return v if v else [default] * n


def _conv(node: Any, g: GraphFacts) -> str:
    w = g.shapes.get(node.input[1]) if len(node.input) > 1 else None
    kernel = list(_attr(node, "kernel_shape", []) or (w[2:] if w else []))
    if len(kernel) != 2:
        return "only 2-D convolutions run on the DLA"
    stride, dil = _ints(node, "strides", 2, 1), _ints(node, "dilations", 2, 1)
    pads = _ints(node, "pads", 4, 0)
    groups = int(_attr(node, "group", 1))
    if not g.constant(node.input[1]):
        return "weights are not a constant"
    if node.op_type == "ConvTranspose":
        if any(k > 32 for k in kernel) or any(s > 32 for s in stride):
            return "deconvolution kernel or stride above 32"
        if any(pads) or groups != 1 or any(d != 1 for d in dil):
            return "deconvolution with padding, groups or dilation"
        return ""
    if any(not 1 <= k <= 32 for k in kernel):
        return f"kernel {kernel[0]}x{kernel[1]}: the DLA takes 1 to 32"
    if any(not 1 <= s <= 8 for s in stride):
        return f"stride {stride}: the DLA takes 1 to 8"
    if any(not 0 <= p <= 31 for p in pads) or any(p >= kernel[i % 2] for i, p in enumerate(pads)):
        return f"padding {pads}: the DLA takes 0 to 31, below the kernel"
    if any(not 1 <= d <= 32 for d in dil):
        return f"dilation {dil}: the DLA takes 1 to 32"
    out = g.shapes.get(node.output[0])
    if (out and out[1] is not None and out[1] > 8192) or groups > 8192:
        return "more than 8192 output maps or groups"
    return ""


def _pool(node: Any, target: "Target") -> str:
    kernel = list(_attr(node, "kernel_shape", []) or [])
    stride, pads = _ints(node, "strides", 2, 1), _ints(node, "pads", 4, 0)
    if len(kernel) != 2:
        return "only 2-D pooling runs on the DLA"
    if any(not 1 <= k <= 8 for k in kernel):
        return f"pooling window {kernel[0]}x{kernel[1]}: the DLA takes 1 to 8"
    if any(not 1 <= s <= 16 for s in stride):
        return f"pooling stride {stride}: the DLA takes 1 to 16"
    if any(not 0 <= p <= 7 for p in pads):
        return f"pooling padding {pads}: the DLA takes 0 to 7"
    if any(d != 1 for d in _ints(node, "dilations", 2, 1)):
        return "dilated pooling"
    if (node.op_type == "AveragePool" and target.dla == "xavier" and any(pads)
            and not _attr(node, "count_include_pad", 0)):
        return "average pooling that excludes its padding: Xavier's DLA counts padding"
    return ""


def _concat(node: Any, g: GraphFacts) -> str:
    axis = int(_attr(node, "axis", 1))
    rank = len(g.shapes.get(node.output[0]) or [0, 0, 0, 0])
    if axis % rank != 1:
        return f"concatenation on axis {axis}: the DLA concatenates channels only"
    if len([i for i in node.input if i]) < 2:
        return "concatenation of one input"
    return ""


def _resize(node: Any, g: GraphFacts, target: "Target") -> str:
    import numpy as np

    mode = _attr(node, "mode", "nearest")
    ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "nearest" and not (ctm == "asymmetric" and _attr(node, "nearest_mode", "round_prefer_floor") == "floor"):
        return "nearest resize other than asymmetric/floor (nn.Upsample's)"
    if mode == "linear" and (ctm not in ("half_pixel", "pytorch_half_pixel") or target.version < (8, 6)):
        return "linear resize: half-pixel only, from TensorRT 8.6"
    if mode not in ("nearest", "linear"):
        return f"{mode} resize"
    src, dst = g.shapes.get(node.input[0]), g.shapes.get(node.output[0])
    if not src or not dst or None in src or None in dst:
        return "resize to a size not fixed when the engine is built"
    scales = [d / s for s, d in zip(src, dst)]
    top = 32 if mode == "nearest" else 4
    if scales[:2] != [1, 1] or any(not float(s).is_integer() or not 1 <= s <= top for s in scales[2:]):
        return f"resize scales {np.round(scales, 3).tolist()}: the DLA takes integer H, W scales 1 to {top}"
    return ""


def _softmax(node: Any, g: GraphFacts, target: "Target") -> str:
    if target.dla == "xavier":
        return "Softmax: Xavier's DLA has no SoftMax layer"
    shape = g.shapes.get(node.input[0])
    if shape is None or len(shape) != 4:
        return f"Softmax over a {len(shape) if shape else '?'}-D tensor; the DLA's layers are 4-D"
    axis = int(_attr(node, "axis", -1)) % 4
    if axis == 0:
        return "Softmax over the batch"
    others = [d for i, d in enumerate(shape) if i not in (0, axis)]
    limit = 8192 if all(d == 1 for d in others) else 1024
    if shape[axis] is None or shape[axis] > limit:
        return f"Softmax over {shape[axis]} values: the DLA takes at most {limit} here"
    return ""


def _slice(node: Any, g: GraphFacts) -> str:
    if node.op_type == "Split":
        axis = int(_attr(node, "axis", 0)) % 4
        return "" if axis != 0 else "split on the batch axis"
    if any(i and not g.constant(i) for i in node.input[1:]):
        return "slice bounds computed at run time"
    steps = g.consts.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if steps is not None and any(int(s) != 1 for s in steps.ravel()):
        return "slice with a step other than 1"
    axes = g.consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if axes is not None and any(int(a) % 4 == 0 for a in axes.ravel()):
        return "slice on the batch axis"
    return ""


def _switches(model: Any, placements: list[Placement]) -> tuple[int, int]:
    """Tensors crossing between DLA and GPU nodes, and the number of connected DLA pieces."""
    where = {}
    by_name = {p.node: p for p in placements}
    for node in model.graph.node:
        p = by_name.get(node.name or node.output[0])
        if p is not None:
            for o in node.output:
                where[o] = (p.dla, p.node)
    # tensors produced by a folded node (Q/DQ, Identity) take their source's side
    for node in model.graph.node:
        if node.op_type in NO_LAYER and node.input and node.input[0] in where:
            where[node.output[0]] = where[node.input[0]]
    crossings: set[tuple[str, bool]] = set()
    parent: dict[str, str] = {p.node: p.node for p in placements if p.dla}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in model.graph.node:
        p = by_name.get(node.name or node.output[0])
        if p is None:
            continue
        for i in node.input:
            if i in where:
                dla, src = where[i]
                if dla != p.dla:
                    crossings.add((i, p.dla))
                elif dla and p.dla:
                    parent[find(src)] = find(p.node)
    return len(crossings), len({find(x) for x in parent})
