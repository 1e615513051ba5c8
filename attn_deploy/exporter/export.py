"""The ``export`` verb: a model to ``FILE.onnx`` plus ``FILE.json``, linted and parity-checked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from attn_deploy import __version__, layouts
from attn_deploy.errors import UserError
from attn_deploy.exporter.blockcheck import check_model_blocks, explain_export_failure, name_lint_findings
from attn_deploy.exporter.layers import find_boundaries, model_rows
from attn_deploy.exporter.lint import LintReport, lint_onnx
from attn_deploy.exporter.nms import NmsOptions, append_nms
from attn_deploy.exporter.parity_check import check_export
from attn_deploy.exporter.torch2onnx import MAX_OPSET, MIN_OPSET, ExportSpec, clean, onnx_metadata, torch_to_onnx
from attn_deploy.files import all_or_nothing, atomic_write, check_writable, sha256, to_json
from attn_deploy.models.heads import Detector, Head, head_of
from attn_deploy.models.quantized import is_quantized
from attn_deploy.models.yolo import check_imgsz
from attn_deploy.onnxfile import GraphFacts
from attn_deploy.parity.tensor import TensorParity, Tolerances
from attn_deploy.sidecar import read_sidecar
from attn_deploy.targets import Target, parser_table
from attn_deploy.targets.dla import dla_report
from attn_deploy.targets.rewrite import Rewrite, rewrite_for

__all__ = ["ExportResult", "export_model", "layer_table", "read_sidecar", "sidecar"]

Progress = Callable[[str], None]
QUANTIZED_NOTE = ("not run on a quantized model: its fake quantization and ONNX Runtime's QuantizeLinear round "
                  "a value on a step's edge apart, and INT8 noise compounds; judge its detections with 'parity'")


@dataclass
class ExportResult:
    """Truthy when the graph passed lint and parity (or the checks were skipped)."""

    model: str
    onnx: str
    sidecar: str
    spec: ExportSpec
    nms: NmsOptions | None
    nodes: int
    ops: dict[str, int]
    size: int
    sha256: str
    seconds: float
    head: Head | None = None
    lint: LintReport | None = None
    parity: TensorParity | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (self.lint is None or self.lint.passed) and (self.parity is None or self.parity.passed)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        out = [f"lint: {f.node} ({f.op}): {f.reason}" for f in (self.lint.findings if self.lint is not None else [])]
        return out + (self.parity.failures() if self.parity is not None else [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "onnx": self.onnx, "sidecar": self.sidecar, "passed": self.passed,
            "imgsz": list(self.spec.imgsz), "batch": self.spec.batch, "dynamic": self.spec.dynamic,
            "opset": self.spec.opset, "head": self.head.to_dict() if self.head else None,
            "nms": vars(self.nms) if self.nms else None, "nodes": self.nodes,
            "ops": self.ops, "bytes": self.size, "sha256": self.sha256, "seconds": round(self.seconds, 3),
            "lint": self.lint.to_dict() if self.lint is not None else None,
            "parity": self.parity.to_dict() if self.parity is not None else None, **self.extra,
        }


def export_model(
    net: Detector, output: str | Path | None = None, spec: ExportSpec = ExportSpec(),
    nms: NmsOptions | None = None, check: bool = True, tol: Tolerances | None = None,
    source: dict[str, Any] | None = None, progress: Progress | None = None, target: Target | None = None,
) -> ExportResult:
    """Export ``net`` and write the ONNX file and its sidecar atomically.

    Parity tolerances default to a multiple of the model's own float32 noise
    (``parity_check.check_export``); ``tol`` fixes them instead. The graph's output is the
    model's as it stands: for YOLO26's end-to-end top-k, ``heads.set_end2end(net)`` first.

    ``target``: a deployment box (``attn_deploy.targets``): its TensorRT's opsets bound the
    export's, the nodes its parser refuses are rewritten where an exact rewrite exists
    (``targets/rewrite.py``) before the parity check judges the rewritten graph, lint uses its
    parser table, and with a DLA the sidecar says where each layer would run."""
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    spec.check()
    if target is not None:
        target_opset(target, spec.opset)  # an opset the target's parser cannot read is refused here
    if nms is not None:
        nms.check()
    check_imgsz(spec.imgsz, int(net.stride.max()))
    head = head_of(net)
    _check_head(net, head, spec, nms)
    path = check_writable(Path(output) if output else Path(f"{net.name}.onnx"))
    plain, final, rewrites = _graphs(net, spec, nms, head, target, say)
    data = final.SerializeToString()
    facts = GraphFacts.of(final) if target is not None else None  # lint's and the DLA placement's
    lint = parity = None
    quantized = is_quantized(net)
    if check:
        say("checking TensorRT compatibility")
        lint = lint_onnx(final, target, facts)
        name_lint_findings(net, lint.findings)
    if check and not quantized:  # fake quantization rounds values on a step's edge either way: judge detections
        say("checking ONNX Runtime against PyTorch")
        parity = check_export(net, plain.SerializeToString(), spec, tol, nms, data if nms else None)
    result = ExportResult(
        model=net.name, onnx=str(path), sidecar=str(path.with_suffix(".json")), spec=spec, nms=nms,
        nodes=len(final.graph.node), ops=_ops(final), size=len(data), sha256=sha256(data),
        seconds=0.0, head=head, lint=lint, parity=parity,
        extra={"parity_note": QUANTIZED_NOTE} if check and quantized else {},
    )
    if target is not None:
        result.extra["target"] = target_section(final, target, rewrites, layer_modules(net), facts)
    doc = to_json(sidecar(net, final, result, source)).encode()
    with all_or_nothing() as written:
        written.append(atomic_write(path, data))
        written.append(atomic_write(result.sidecar, doc))
    result.seconds = time.perf_counter() - start
    return result


def _graphs(net: Detector, spec: ExportSpec, nms: NmsOptions | None, head: Head, target: Target | None,
            say: Progress) -> tuple[Any, Any, list[Rewrite]]:
    """The exported graph as parity checks it (``plain``) and as it is written (``final``: with
    the NMS tail, if asked; else the same), both rewritten for ``target``, and the rewrites."""
    import onnx

    user_inputs = check_model_blocks(net)  # the user's own blocks keep their shapes (none: nothing runs)
    say(f"exporting {net.name} to ONNX (opset {spec.opset})")
    try:
        raw = torch_to_onnx(net, spec)
    except Exception as e:
        if user_inputs and (why := explain_export_failure(net, user_inputs, e)) is not None:
            raise why from e
        raise
    meta = onnx_metadata(net, spec)
    plain = clean(raw, net.name, meta)
    final = (clean(append_nms(onnx.load_from_string(raw), nms, head.layout).SerializeToString(), net.name, meta)
             if nms else plain)
    rewrites = for_target(plain, final, target) if target is not None else []
    onnx.checker.check_model(final, full_check=True)
    return plain, final, rewrites


def target_opset(target: Target, asked: int | None) -> int:
    """The opset to export for ``target``: the one asked for if its parser takes it (else a user
    error), otherwise the highest both we and it take, at most our default 17."""
    low, high = max(MIN_OPSET, target.opsets[0]), min(MAX_OPSET, target.opsets[1])
    if asked is None:
        return min(high, ExportSpec.opset)
    if not low <= asked <= high:
        raise UserError(f"--opset {asked}: {target.name}'s TensorRT {target.tensorrt} parses opsets "
                        f"{target.opsets[0]} to {target.opsets[1]}; leave --opset out to get {min(high, ExportSpec.opset)}")
    return asked


def for_target(plain: Any, final: Any, target: Target) -> list[Rewrite]:
    """Rewrite, in place, what ``target``'s parser refuses in both graphs (the checked one and the
    written one, the same graph unless an NMS tail was added)."""
    table = parser_table(target.parser)
    done = rewrite_for(plain, table, target)
    if final is not plain:
        rewrite_for(final, table, target)
    return done


def target_section(proto: Any, target: Target, rewrites: list[Rewrite], modules: dict[int, str],
                   facts: GraphFacts | None = None) -> dict[str, Any]:
    """The sidecar's ``target``: its facts, the rewrites applied, and with a DLA where each layer runs."""
    doc: dict[str, Any] = {**target.to_dict(), "rewrites": [r.to_dict() for r in rewrites]}
    if target.dla is not None:
        doc["dla_placement"] = dla_report(proto, target, facts).to_dict(modules)
    return doc


def layer_modules(net: Detector) -> dict[int, str]:
    return {row.index: row.module for row in model_rows(net)}


def _check_head(net: Detector, head: Head, spec: ExportSpec, nms: NmsOptions | None) -> None:
    """An end-to-end top-k needs no NMS, and needs at least ``max_det`` anchors to pick from."""
    if head.layout != layouts.END2END:
        return
    if nms is not None:
        raise UserError("--nms and --end2end together: the one-to-one head needs no NMS", "pick one of them")
    h, w = spec.imgsz
    anchors = sum((h // int(s)) * (w // int(s)) for s in net.stride.tolist())
    if anchors < (head.max_det or 0):
        raise UserError(f"--imgsz {h},{w} gives {anchors} anchors, fewer than --max-det {head.max_det}",
                        "use a larger input or a smaller --max-det")


def _ops(proto: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _io(values: Any) -> list[dict[str, Any]]:
    from onnx import helper

    return [
        {"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
         "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]}
        for v in values
    ]


def sidecar(net: Detector, proto: Any, result: ExportResult, source: dict[str, Any] | None) -> dict[str, Any]:
    """What later steps (calib, build, parity) need to know about the ONNX file."""
    det = net.detect
    head = result.head or head_of(net)
    return {
        "attn_deploy": __version__,
        "model": net.name,
        "source": source or {"model": net.name},
        "names": list(net.names),
        "nc": det.nc,
        "imgsz": list(result.spec.imgsz),
        "batch": result.spec.batch,
        "strides": [int(s) for s in net.stride.tolist()],
        "family": head.family,
        "head": head.to_dict(),
        "anchors": (det.anchors * det.stride.view(-1, 1, 1)).tolist() if head.kind == "anchor-based" else None,
        "opset": result.spec.opset,
        "dynamic": result.spec.dynamic,
        "dynamic_axes": result.spec.dynamic_axes(head.layout) or {},
        "inputs": _io(proto.graph.input),
        "outputs": _io(proto.graph.output),
        "output_layout": layouts.NMS if result.nms else head.layout,
        "nms": vars(result.nms) if result.nms else None,
        "onnx": {"file": Path(result.onnx).name, "sha256": result.sha256, "bytes": result.size,
                 "nodes": result.nodes, "ops": result.ops},
        "lint": {"passed": result.lint.passed, "tensorrt": result.lint.tensorrt,
                 "findings": len(result.lint.findings)} if result.lint is not None else None,
        "parity": result.parity.to_dict() if result.parity is not None else None,
        "layers": layer_table(net, proto),
        # choices the checkpoint's tensors left open (CBAM's plane order, SE's gate): what was
        # taken, from which evidence (None: a guess, also warned at load)
        "readings": list(getattr(net, "readings", [])),
        # the box it was exported for (export --target): its facts, rewrites, DLA placement
        **({"target": result.extra["target"]} if "target" in result.extra else {}),
    }


def layer_table(net: Detector, proto: Any) -> list[dict[str, Any]]:
    """Each yaml row with the ONNX tensors at its boundaries (``exporter/layers.py``)."""
    return [b.to_dict() for b in find_boundaries(proto, model_rows(net))]
