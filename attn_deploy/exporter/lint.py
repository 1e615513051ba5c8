"""Will TensorRT's ONNX parser take this graph? A check of every node, before any GPU.

Checks, per node: the op exists in the parser's support table for the TensorRT in question
(``attn_deploy/targets/parser/trt-V.csv``: 10.15 by default, a target's own with ``target``)
and is supported; its data tensor's type is one that TensorRT accepts for that op (8.x narrows
INT64 to INT32 and says so in its table's notes, so INT64 passes where INT32 does); the
restrictions that can occur in detector graphs (constant axes, pooling rank and dilation,
Resize modes, TopK's K, ScatterND reduction, symmetric Q/DQ, static EyeLike) and those a
version's table adds (``axes``, ``K``, NMS thresholds as constants). Per graph: the opset within
the parser's range, no custom op domains, no float64 anywhere, UINT8 only at the graph's edges.
Each finding names its yaml layer (from the node's scope) and the table it comes from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from attn_deploy.onnxfile import GraphFacts, layer_of, read_onnx
from attn_deploy.targets import OpSupport, parser_table, table_source
from attn_deploy.targets.rewrite import REWRITES

if TYPE_CHECKING:
    from attn_deploy.targets import Target

TRT_VERSION = "10.15"
STANDARD_DOMAINS = ("", "ai.onnx")


def support_table(version: str = TRT_VERSION) -> dict[str, OpSupport]:
    return parser_table(version)


@dataclass
class Finding:
    node: str
    op: str
    reason: str
    fix: str
    layer: int | None = None  # the yaml layer whose scope the node is in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LintReport:
    """Truthy when TensorRT's parser should accept every node."""

    path: str
    nodes: int
    ops: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    tensorrt: str = TRT_VERSION
    source: str = field(default_factory=lambda: table_source(TRT_VERSION))
    target: str | None = None
    opset: int | None = None

    @property
    def passed(self) -> bool:
        return not self.findings

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "passed": self.passed, "target": self.target, "tensorrt": self.tensorrt,
            "source": self.source, "opset": self.opset, "nodes": self.nodes, "ops": self.ops,
            "findings": [f.to_dict() for f in self.findings],
        }


# ONNX TensorProto element types, as the support table names them
TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16",
              11: "DOUBLE", 16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4", 23: "FP4",
              4: "UINT16", 5: "INT16", 12: "UINT32", 13: "UINT64", 8: "STRING"}
TYPE_FROM_OUTPUT = {"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "EyeLike"}

FIXES = {
    "custom": "re-export with standard ONNX ops only; attn-deploy's modules need no plugin",
    "unsupported": "rewrite the layer with supported ops (or do this step outside the engine)",
    "unknown": "this TensorRT does not know the op: rewrite it with ops from its support table",
    "double": "cast to float32 in the model before export",
    "int": "keep integer math on shapes and indices; do arithmetic on float tensors",
    "uint8": "use UINT8 only as a network input or output; cast to float inside",
    "axes": "fold the axes into a constant (re-export with constant folding, or run onnxslim)",
    "pool": "use 2-D pooling without dilation",
    "indices": "drop MaxPool's Indices output",
    "resize": "export Resize with nearest/asymmetric/floor or linear/half_pixel, as nn.Upsample does",
    "topk": "use a constant K below 3840, sorted",
    "scatter": "use ScatterND without reduction",
    "zero_point": "quantize symmetrically (zero point 0), as NVIDIA Model Optimizer does",
    "eye": "build the identity mask from Range and Equal on the dynamic size",
    "opset": "export with an opset the target parses (export --target picks one)",
    "version": "rewrite the layer with ops this TensorRT has (export --target applies the known rewrites)",
    "k": "make K a constant (a fixed number of detections)",
    "nms": "make the NMS thresholds and box count constants",
}


def lint_onnx(model: str | Path | "onnx.ModelProto", target: "Target | None" = None,  # noqa: F821
              facts: GraphFacts | None = None) -> LintReport:
    """Check an ONNX file (or loaded model) against TensorRT's parser support table: TensorRT
    10.15's, or ``target``'s own TensorRT's. A file that is not a valid ONNX model at all is a
    user error (``onnxfile.read_onnx``), not a finding. ``facts``: the graph's, when the caller
    has them (one shape inference for several targets)."""
    proto, path = _load(model)
    facts = facts or GraphFacts.of(proto)
    version = target.parser if target else TRT_VERSION
    types = {name: TYPE_NAMES.get(t, str(t)) for name, t in facts.types.items()}
    shapes, consts, opset = facts.shapes, facts.consts, facts.opset
    table = support_table(version)
    report = LintReport(path, len(proto.graph.node), dict(Counter(n.op_type for n in proto.graph.node)),
                        tensorrt=target.tensorrt if target else TRT_VERSION, source=table_source(version),
                        target=target.name if target else None, opset=opset)
    if target and opset is not None and not target.opsets[0] <= opset <= target.opsets[1]:
        low, high = target.opsets
        report.findings.append(Finding("(graph)", "(opset)", f"opset {opset}; TensorRT {target.tensorrt} parses "
                                       f"opsets {low} to {high}", FIXES["opset"]))
    narrow = target is not None and target.version < (10,)
    edges = {v.name for v in list(proto.graph.input) + list(proto.graph.output)}
    for node in proto.graph.node:
        found = _check_node(node, table, types, shapes, consts, edges, report.tensorrt, narrow)
        for f in found:
            f.layer = layer_of(node.name)
        report.findings.extend(found)
    report.findings.extend(_check_tensors(proto, types))
    return report


@dataclass
class TargetLint:
    """One target's verdict on a graph: its parser's findings and, with a DLA, the placement."""

    target: "Target"
    lint: LintReport
    dla: Any = None  # targets.dla.DlaReport
    modules: dict[int, str] = field(default_factory=dict)  # yaml layer -> its module, from the sidecar

    @property
    def passed(self) -> bool:
        return self.lint.passed

    def to_dict(self) -> dict[str, Any]:
        findings = [{**f.to_dict(), "module": self.modules.get(f.layer) if f.layer is not None else None}
                    for f in self.lint.findings]
        return {"target": self.target.to_dict(), "passed": self.passed, "source": self.lint.source,
                "opset": self.lint.opset, "findings": findings,
                "dla": self.dla.to_dict(self.modules) if self.dla is not None else None}


def lint_targets(onnx_file: str | Path, chosen: list["Target"]) -> list[TargetLint]:
    """``lint_onnx`` for each target, with the DLA placement where the target has one; yaml
    layers are named from the export sidecar when there is one."""
    from attn_deploy.sidecar import read_sidecar
    from attn_deploy.targets.dla import dla_report

    proto = read_onnx(onnx_file)
    facts = GraphFacts.of(proto)  # one shape inference for every target
    side = read_sidecar(onnx_file) or {}
    modules = {int(r["index"]): str(r["module"]) for r in side.get("layers") or [] if isinstance(r, dict) and "index" in r}
    out = []
    for t in chosen:
        report = lint_onnx(proto, t, facts)
        report.path = str(onnx_file)
        out.append(TargetLint(t, report, dla_report(proto, t, facts) if t.dla else None, modules))
    return out


def _load(model: Any) -> tuple[Any, str]:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>"
    return read_onnx(model), str(model)


def _check_node(node: Any, table: dict[str, OpSupport], types: dict[str, str], shapes: dict[str, list[int | None]],
                consts: dict[str, Any], edges: set[str], trt: str = TRT_VERSION, narrow: bool = False) -> list[Finding]:
    name = node.name or (node.output[0] if node.output else "?")
    if node.domain not in STANDARD_DOMAINS:
        return [Finding(name, node.op_type, f"custom domain '{node.domain}' (a plugin or runtime-specific op)", FIXES["custom"])]
    spec = table.get(node.op_type)
    if spec is None:
        fix = FIXES["version"] if node.op_type in REWRITES else FIXES["unknown"]
        return [Finding(name, node.op_type, f"not in TensorRT {trt}'s ONNX operator table", fix)]
    if not spec.supported:
        fix = FIXES["version"] if node.op_type in REWRITES else FIXES["unsupported"]
        return [Finding(name, node.op_type, f"not supported by TensorRT {trt}'s ONNX parser", fix)]
    found = []
    data = node.output[0] if node.op_type in TYPE_FROM_OUTPUT else (node.input[0] if node.input else "")
    dtype = types.get(data)
    if narrow and dtype in ("INT64", "DOUBLE"):  # 8.x casts these down (its tables' notes)
        dtype = {"INT64": "INT32", "DOUBLE": "FP32"}[dtype]
    if dtype and spec.types and dtype not in spec.types and not (dtype == "UINT8" and data in edges):
        fix = FIXES["double"] if dtype == "DOUBLE" else FIXES["int"]
        found.append(Finding(name, node.op_type, f"{dtype} input; TensorRT takes {' '.join(sorted(spec.types))} here", fix))
    check = RESTRICTIONS.get(node.op_type) or (_reduce_axes if node.op_type.startswith("Reduce") else None)
    if check is not None:
        found.extend(Finding(name, node.op_type, reason, fix) for reason, fix in check(node, shapes, consts))
    for rule in spec.rules:
        found.extend(Finding(name, node.op_type, reason, fix) for reason, fix in VERSION_RULES[rule](node, consts))
    return found


def _check_tensors(proto: Any, types: dict[str, str]) -> list[Finding]:
    found = [Finding(n, "(tensor)", "float64 tensor (TensorRT narrows DOUBLE to FP32 and clamps it)", FIXES["double"])
             for n, t in types.items() if t == "DOUBLE"]
    return found


# ---- restrictions: each returns (reason, fix) pairs for one node ---------------------------

Check = Callable[[Any, dict[str, list[int | None]], dict[str, Any]], list[tuple[str, str]]]


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _const_input(node: Any, i: int, consts: dict[str, Any]) -> bool:
    return len(node.input) <= i or not node.input[i] or node.input[i] in consts


def _reduce_axes(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    return [] if _const_input(node, 1, consts) else [("axes computed at run time", FIXES["axes"])]


def _squeeze_axes(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    return [] if _const_input(node, 1, consts) else [("axes not constant", FIXES["axes"])]


def _pool(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    if len(_attr(node, "kernel_shape", [])) not in (2, 3):
        out.append(("only 2-D and 3-D pooling", FIXES["pool"]))
    if any(d != 1 for d in _attr(node, "dilations", []) or []):
        out.append(("dilated pooling", FIXES["pool"]))
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out.append(("MaxPool's Indices output", FIXES["indices"]))
    return out


def _resize(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    modes = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
    out = []
    ctm = _as_str(_attr(node, "coordinate_transformation_mode", b"half_pixel"))
    if ctm not in modes:
        out.append((f"coordinate_transformation_mode {ctm}", FIXES["resize"]))
    if _as_str(_attr(node, "mode", b"nearest")) not in ("nearest", "linear"):
        out.append((f"mode {_as_str(_attr(node, 'mode'))}", FIXES["resize"]))
    nearest = _as_str(_attr(node, "nearest_mode", b"round_prefer_floor"))
    if nearest not in ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"):
        out.append((f"nearest_mode {nearest}", FIXES["resize"]))
    if _attr(node, "antialias", 0):
        out.append(("antialias", FIXES["resize"]))
    if _as_str(_attr(node, "keep_aspect_ratio_policy", b"stretch")) != "stretch":
        out.append(("keep_aspect_ratio_policy other than stretch", FIXES["resize"]))
    return out


def _topk(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    out = [] if _attr(node, "sorted", 1) == 1 else [("sorted=0", FIXES["topk"])]
    k = consts.get(node.input[1]) if len(node.input) > 1 else None
    if k is not None and int(k.max()) >= 3840:
        out.append((f"K = {int(k.max())}, TensorRT needs K < 3840", FIXES["topk"]))
    return out


def _scatter(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    red = _as_str(_attr(node, "reduction", b"none"))
    return [] if red == "none" else [(f"reduction {red}", FIXES["scatter"])]


def _eye(node: Any, shapes: dict[str, list[int | None]], consts: dict[str, Any]) -> list[tuple[str, str]]:
    dims = shapes.get(node.input[0], ["?"])
    return [] if all(isinstance(d, int) and d > 0 for d in dims) else [("dynamic input shape", FIXES["eye"])]


def _qdq(node: Any, shapes: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    if len(node.input) < 3 or not node.input[2]:
        return []
    if node.input[2] not in consts:
        return [("zero point is not a constant", FIXES["zero_point"])]
    zp = consts[node.input[2]]
    return [("non-zero zero point (asymmetric quantization)", FIXES["zero_point"])] if zp is not None and zp.any() else []


def _as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _axes_constant(node: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    i = 3 if node.op_type == "Slice" else 1
    return [] if _const_input(node, i, consts) else [("axes must be a constant on this TensorRT", FIXES["axes"])]


def _k_constant(node: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    return [] if _const_input(node, 1, consts) else [("K must be a constant on this TensorRT", FIXES["k"])]


def _inputs_constant(node: Any, consts: dict[str, Any]) -> list[tuple[str, str]]:
    ok = all(_const_input(node, i, consts) for i in (2, 3, 4))
    return [] if ok else [("box count and thresholds must be constants on this TensorRT", FIXES["nms"])]


# the restrictions a version's table adds (tools/parser_tables.py RULES)
VERSION_RULES: dict[str, Callable[[Any, dict[str, Any]], list[tuple[str, str]]]] = {
    "axes-constant": _axes_constant, "k-constant": _k_constant, "inputs-constant": _inputs_constant,
}

RESTRICTIONS: dict[str, Check] = {
    "Squeeze": _squeeze_axes, "Unsqueeze": _squeeze_axes, "MaxPool": _pool, "AveragePool": _pool,
    "LpPool": _pool, "Resize": _resize, "TopK": _topk, "ScatterND": _scatter, "EyeLike": _eye,
    "QuantizeLinear": _qdq, "DequantizeLinear": _qdq,
}
