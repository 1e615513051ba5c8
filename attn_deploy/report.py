"""Tables for people: how results print in a terminal (rich). JSON comes from the results."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from rich.table import Table

from attn_deploy.models.info import ModelInfo

if TYPE_CHECKING:
    from attn_deploy.calib.result import CalibResult
    from attn_deploy.engines.bench import BenchResult
    from attn_deploy.engines.build import BuildResult
    from attn_deploy.exporter import ExportResult, LintReport
    from attn_deploy.parity.check import ParityResult


def _paper(cls: type) -> str:
    """The paper line of a module file's docstring (its first paragraph)."""
    doc = (inspect.getmodule(cls).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


FAMILY_NOTES = {  # head, built-in attention; KEY's place: after the backbone's last stage
    "yolov5": ("anchor-based, objectness; KEY before SPPF", "none"),
    "yolov8": ("anchor-free, DFL; KEY before SPPF", "none"),
    "yolo11": ("anchor-free, DFL; KEY before SPPF", "C2PSA (multi-head self-attention)"),
    "yolo12": ("anchor-free, DFL; KEY at the backbone's end", "A2C2f (area attention)"),
    "yolo26": ("anchor-free, no DFL, one-to-one (NMS-free) option; KEY before SPPF",
               "C2PSA, C3k2 with a PSA block"),
}


def models_table() -> list[Any]:
    from attn_deploy.models.attention import attention_aliases, get_attention, list_attention
    from attn_deploy.models.zoo import FAMILIES, SCALES

    names = Table(title="Built-in models (80 classes; -KEY adds one attention block as layer 9)", show_header=True)
    for col in ("family", "names", "head", "its own attention"):
        names.add_column(col, overflow="fold")
    scales = ",".join(SCALES)
    for family in FAMILIES:
        what = FAMILY_NOTES[family]
        names.add_row(family, f"{family}{{{scales}}}, {family}{{{scales}}}-KEY", *what)
    attn = Table(title="Attention modules (KEY)", show_header=True)
    for col in ("key", "yaml names", "paper"):
        attn.add_column(col, overflow="fold")
    aliases = attention_aliases()
    for key in list_attention():
        attn.add_row(key, ", ".join(aliases[key]), _paper(get_attention(key).cls))
    return [names, attn]


def info_table(info: ModelInfo) -> Table:
    h, w = info.imgsz
    t = Table(title=f"{info.name}: {info.params:,} parameters, {info.gflops:.1f} GFLOPs at {h}x{w}",
              caption=info.head.get("description"))
    for col, justify in (("#", "right"), ("from", "right"), ("n", "right"), ("module", "left"),
                         ("args", "left"), ("params", "right"), ("GFLOPs", "right"), ("output", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for layer in info.layers:
        t.add_row(
            str(layer.index), str(layer.source), str(layer.number), layer.module, str(layer.args),
            f"{layer.params:,}", f"{layer.gflops:.2f}", "x".join(map(str, layer.shape)),
        )
    return t


def _ok(passed: bool) -> str:
    return "[green]pass[/]" if passed else "[red]FAIL[/]"


OUTPUT_WORDS = {"xywh_obj_cls": "xywh, obj, classes", "xywh_cls": "N x (4 + nc) x anchors: xywh, classes",
                "xyxy_score_cls": "N x max-det x 6: x1 y1 x2 y2 score class, NMS-free"}


def export_table(r: ExportResult) -> Table:
    t = Table(title=f"{r.model} -> {r.onnx}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    h, w = r.spec.imgsz
    shape = f"{'N' if r.spec.dynamic else r.spec.batch}x3x{'H' if r.spec.dynamic else h}x{'W' if r.spec.dynamic else w}"
    t.add_row("graph", f"opset {r.spec.opset}, input images {shape}" + (", dynamic" if r.spec.dynamic else "")
              + (f", NMS top {r.nms.topk}" if r.nms else f", output0 ({OUTPUT_WORDS.get(r.head.layout if r.head else '', '?')})"))
    t.add_row("size", f"{r.size / 1e6:.2f} MB, {r.nodes} nodes, sha256 {r.sha256[:12]}")
    t.add_row("ops", ", ".join(f"{op} {n}" for op, n in r.ops.items()))
    if r.lint is not None:
        t.add_row("TensorRT lint", f"{_ok(r.lint.passed)} ({r.lint.tensorrt} parser table, {len(r.lint.findings)} finding(s))")
    if r.parity is not None:
        cases = ", ".join("x".join(map(str, c)) for c in r.parity.cases)
        t.add_row("parity", f"{_ok(r.parity.passed)} ONNX Runtime vs PyTorch on {cases}")
        for s in r.parity.stats:
            noise = f", {s.noise_ratio:.2g}x float32 noise {s.noise:.2g}" if s.noise_ratio is not None else ""
            t.add_row(f"  {s.name}", f"{_ok(s.passed)} max abs {s.max_abs:.2e} (tol {s.atol:.3g} + {s.rtol:g}|ref|{noise}), "
                      f"max rel {s.max_rel:.2e}, cosine {s.cosine:.9f}")
        for name, ok in r.parity.checks.items():
            t.add_row(f"  {name}", _ok(ok))
    if "parity_note" in r.extra:
        t.add_row("parity", r.extra["parity_note"])
    t.add_row("time", f"{r.seconds:.1f} s; sidecar {r.sidecar}")
    return t


def targets_table(chosen: list[Any]) -> Table:
    """``attn-deploy targets``: each box's TensorRT, parser table, GPU, precisions and DLA."""
    t = Table(title="Deployment targets (--target NAME, or facts such as trt=8.6,dla=orin)")
    for col in ("target", "TensorRT", "parser table, opsets", "GPU", "fast", "DLA", "INT8 by", "FP16 by"):
        t.add_column(col, overflow="fold")
    for x in chosen:
        dla = f"{x.dla} x{x.dla_cores}" if x.dla else "none"
        int8 = ("Q/DQ" + (" or calibrator" if x.implicit_int8 else "")) if "int8" in x.precisions else "no INT8"
        fp16 = ("builder flag" if x.fp16_flag else "model types (AutoCast)") if "fp16" in x.precisions else "no FP16"
        t.add_row(x.name, x.tensorrt, f"{x.parser}, {x.opsets[0]}-{x.opsets[1]}", x.gpu,
                  " ".join(sorted(x.precisions)) or "fp32 only", dla, int8, fp16)
    return t


def target_lint_tables(results: list[Any]) -> list[Table]:
    """``lint --target``: one row per target (parses or not, DLA share and switches), then each
    refusal, then the layers that fall off each DLA."""
    m = Table(title=f"{results[0].lint.path}: will it build, and where does it run?")
    for col in ("target", "TensorRT", "parses", "on the DLA (MACs)", "DLA nodes", "DLA<->GPU copies"):
        m.add_column(col, overflow="fold")
    tables = [m]
    for r in results:
        d = r.dla
        dla = ("-", "-", "-") if d is None else (
            ("0% (" + d.refused + ")", "0", "-") if d.refused else
            (f"{d.share:.1%}", f"{sum(p.dla for p in d.placements)}/{len(d.placements)}", str(d.switches)))
        m.add_row(r.target.name, r.target.tensorrt, "yes" if r.passed else f"no: {len(r.lint.findings)} node(s)", *dla)
        if not r.passed:
            f = Table(title=f"{r.target.name}: what TensorRT {r.target.tensorrt}'s parser refuses ({r.lint.source})")
            for col in ("node", "layer", "op", "reason", "what to do"):
                f.add_column(col, overflow="fold")
            for x in r.lint.findings:
                layer = "" if x.layer is None else f"{x.layer} {r.modules.get(x.layer, '')}".strip()
                f.add_row(x.node, layer, x.op, x.reason, x.fix)
            tables.append(f)
        if d is not None and not d.refused and d.fallbacks():
            f = Table(title=f"{r.target.name}: layers with nodes off the DLA (each crossing is a copy)")
            for col in ("layer", "module", "on DLA", "MACs on DLA", "falls back", "why (first)"):
                f.add_column(col, overflow="fold")
            first = {}
            for p in d.fallbacks():
                first.setdefault(p.layer, p.why)
            for row in d.by_layer(r.modules):
                if row["fallback_ops"]:
                    share = "-" if row["dla_mac_share"] is None else f"{row['dla_mac_share']:.0%}"
                    f.add_row("" if row["layer"] is None else str(row["layer"]), row["module"],
                              f"{row['on_dla']}/{row['nodes']}", share, ", ".join(row["fallback_ops"]),
                              first.get(row["layer"], ""))
            tables.append(f)
    return tables


def lint_table(r: LintReport) -> Table:
    title = f"{r.path}: {r.nodes} nodes, TensorRT {r.tensorrt} parser: " + ("compatible" if r.passed else f"{len(r.findings)} problem(s)")
    t = Table(title=title)
    for col in ("node", "op", "reason", "what to do"):
        t.add_column(col, overflow="fold")
    for f in r.findings:
        t.add_row(f.node, f.op, f.reason, f.fix)
    if r.passed:
        t.add_row("(all)", ", ".join(f"{op} {n}" for op, n in sorted(r.ops.items())), "supported", "")
    return t


def parity_table(result: ParityResult) -> Table:
    from rich.markup import escape

    title = f"{result.candidate} vs PyTorch  ({result.images} images, {result.data})"
    t = Table(title=escape(title), show_header=True)
    for col in ("check", "figure", "gate", "result"):
        t.add_column(col, justify="left" if col in ("check", "gate") else "right", no_wrap=col != "gate")
    for s in result.tensor:
        t.add_row(f"{s.name} max abs", f"{s.max_abs:.3g}", f"<= {s.atol:g} + {s.rtol:g}|ref| (info)",
                  "within" if s.passed else "beyond")
        t.add_row(f"{s.name} cosine", f"{s.cosine:.6f}", "", "")
    d = result.detections
    err = d.to_dict()
    t.add_row("detections matched / missed / extra", f"{d.matched} / {d.missed} / {d.extra}", f"IoU >= {d.iou_thres:g}, same class", "")
    t.add_row("box error of matched (px) p99 / max", f"{err['box_error_px']['p99']:.3g} / {err['box_error_px']['max']:.3g}", "", "")
    t.add_row("score error of matched p99 / max", f"{err['score_error']['p99']:.3g} / {err['score_error']['max']:.3g}", "", "")
    ok = d.agreement >= result.gates.min_agreement
    t.add_row("detection agreement", f"{d.agreement:.4f}", f">= {result.gates.min_agreement:g}", "pass" if ok else "FAIL")
    if result.map_reference and result.map_candidate:
        r, c = result.map_reference, result.map_candidate
        t.add_row("mAP50 reference / candidate", f"{r.map50:.4f} / {c.map50:.4f}", "", "")
        t.add_row("mAP50-95 reference / candidate", f"{r.map50_95:.4f} / {c.map50_95:.4f}", "", "")
        drop = result.map_drop or 0.0
        t.add_row("mAP50-95 drop (points)", f"{drop:.3f}", f"<= {result.gates.max_map_drop:g}",
                  "pass" if drop <= result.gates.max_map_drop else "FAIL")
    if result.skipped:
        t.add_row("images compared / asked for", f"{result.images} / {result.requested}",
                  f"{len(result.skipped)} unreadable, left out", "")
    t.add_row("verdict", "", "", "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]")
    return t


def build_table(result: BuildResult) -> Table:
    t = Table(title=f"{result.sidecar['onnx']['file']} -> {result.engine}", show_header=False)
    s = result.sidecar
    gpu = s.get("gpu") or {}
    rows = [
        ("TensorRT", s["tensorrt"]), ("GPU", f"{gpu.get('name', '?')} (compute {gpu.get('compute_capability', '?')})"),
        ("precision", f"{s['precision']} requested; ONNX carries {s['onnx_precision']}; {s['plan']['note'] or 'as requested'}"),
        ("profiles", "; ".join(f"{p['input']}: {p['min']} / {p['opt']} / {p['max']}" for p in s["profiles"]) or "static"),
        ("build time", f"{s['build_seconds']} s; sidecar {result.engine.name}.json"),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    return t


def bench_table(results: list[BenchResult]) -> Table:
    first = results[0]
    title = f"bench: batch {first.batch}, {first.imgsz[0]}x{first.imgsz[1]}, {first.device}; latency in ms"
    t = Table(title=title, show_header=True)
    cols = ["target", "backend", "precision", "images/s", "ratio", "min", "mean", "median", "p90", "p95", "p99", "max"]
    if any(r.parts for r in results):
        cols += ["h2d", "compute", "d2h"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("target", "backend", "precision") else "right",
                     overflow="fold", min_width=16 if c == "target" else None)
    for r in results:
        lat = r.latency
        row = [r.label, r.backend, r.precision, f"{r.throughput:.1f}", f"{r.throughput / first.throughput:.2f}",
               *(f"{getattr(lat, k):.2f}" for k in ("min", "mean", "median", "p90", "p95", "p99", "max"))]
        if "h2d" in cols:
            row += [f"{r.parts[p].median:.3f}" if p in r.parts else "" for p in ("h2d", "compute", "d2h")]
        t.add_row(*row)
    return t


def calib_table(result: CalibResult) -> Table:
    from rich.markup import escape

    labelled = result.reference.map50_95 is not None
    t = Table(title=escape(f"{result.precision.upper()} {result.output}  (calibration: {result.images} images of "
                           f"{result.calibration}; validation: {result.val})"), show_header=True)
    for col in ("model", "mAP50", "mAP50-95", "agreement", "damage"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)

    def row(name: str, s: Any) -> None:
        fmt = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
        t.add_row(name, fmt(s.map50), fmt(s.map50_95), f"{s.agreement:.4f}", f"{s.damage(result.reference):.2f}")

    row("float32", result.reference)
    if result.naive is not None:
        row(f"INT8 everything ({result.method})", result.naive)
    for s in result.sensitivity:
        t.add_row(f"  {s.group}{' (attention)' if s.attention else ''}", "", "",
                  f"alone {s.alone:.2f}" if s.alone is not None else "", f"kept out {s.kept:.2f}")
    if result.decision is not None and result.search == "ranked":
        for kept, d in result.decision.trials:
            t.add_row(f"  trial: first {len(kept)} kept out ({result.search_images} images)", "", "", "", f"{d:.2f}")
    row(f"{result.precision.upper()} final" + (f", kept: {', '.join(result.kept)}" if result.kept else ""), result.final)
    unit = "mAP50-95 points" if labelled else "disagreement %"
    verdict = "[green]within[/green]" if result.damage <= result.budget else "[red]OVER[/red]"
    t.add_row(f"budget {result.budget:g} ({unit})", "", "", "", verdict)
    if result.coverage is not None:
        share = f"{result.coverage.share:.1%}"
        t.add_row(f"MACs in INT8 (--min-int8 {result.min_int8:.0%})", "", "", "",
                  f"[green]{share}[/green]" if result.int8_enough else f"[red]{share}[/red]")
    notes = []
    if result.ranking:
        top = ", ".join(f"{e.layer} {e.module} {e.rel:.3f}" for e in result.ranking[:4])
        notes.append(f"layers by local INT8 error (per-block parity, naive graph): {top}, ...")
    if result.coverage is not None and result.coverage.floating:
        top = ", ".join(f"{k} {v:.1%}" for k, v in list(result.coverage.by_layer().items())[:5])
        notes.append(f"in float (share of MACs): {top}")
    if result.stages:
        notes.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.stages.items()))
    t.caption = escape("\n".join(notes)) if notes else None
    return t


def blocks_table(report: Any) -> Table:
    """Per-block parity (``diagnose/blocks.py``): accumulated and local error per yaml layer."""
    culprit = report.culprit
    verdict = f"culprit: layer {culprit}" if culprit is not None else f"no layer's local error over {report.tolerance:g}"
    t = Table(title=f"Per-block error on {report.images} image(s), relative to each layer's max |output|; {verdict}")
    for col, justify in (("#", "right"), ("module", "left"), ("accumulated max abs", "right"), ("accumulated rel", "right"),
                         ("cosine", "right"), ("local rel", "right"), ("local cosine", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        b, acc, loc = row.boundary, row.accumulated, row.local
        name = f"[bold magenta]{b.module}[/] (attention)" if b.attention else b.module
        mark = "[red]>[/] " if b.index == culprit else ""
        local = (f"{loc.rel:.2e}", f"{loc.cosine:.6f}") if loc is not None else ("-", row.note or "-")
        t.add_row(f"{mark}{b.index}", name, f"{acc.max_abs:.3g}", f"{acc.rel:.2e}", f"{acc.cosine:.6f}", *local)
    return t


def blocks_check_table(results: list[Any]) -> Table:
    """``attn-deploy blocks``: each registered block checked alone (``exporter/blockcheck.py``)."""
    from rich.markup import escape

    t = Table(title="Your blocks, each checked alone (shapes at two sizes, ONNX with dynamic H, W, lint, ORT vs PyTorch)")
    for col, justify in (("block", "left"), ("names", "left"), ("rule", "left"), ("shapes (C x H x W)", "left"),
                         ("ops", "left"), ("ORT max abs", "right"), ("result", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in r.ops.items())
        verdict = "[green]ok[/]" if r.passed else f"[red]{escape(r.problem or r.lint[0])}[/]"
        t.add_row(f"{r.block}\n[dim]{escape(r.origin)}[/]", "\n".join(r.names), r.rule, "\n".join(r.shapes), ops,
                  f"{r.max_error:.2e}" if r.max_error is not None else "-", verdict)
    return t


def verify_table(result: Any) -> Table:
    """``verify --fork``: our rebuild against the fork's own model, layer by layer (``diagnose/fork.py``)."""
    from rich.markup import escape

    first = result.first_difference
    verdict = (f"first difference: layer {first.layer}" if first is not None
               else f"every compared layer within {result.layer_tol:g}")
    t = Table(title=f"Our rebuild against the fork's code on {result.images} image(s) at "
                    f"{result.imgsz[0]}x{result.imgsz[1]}; {verdict}")
    for col, justify in (("#", "right"), ("ours", "left"), ("the fork's", "left"), ("shape", "left"),
                         ("max abs", "right"), ("rel", "right"), ("cosine", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in result.layers:
        mark = "[red]>[/] " if first is not None and c.layer == first.layer else ""
        figures = ((f"{c.stats.max_abs:.3g}", f"{c.stats.rel:.2e}", f"{c.stats.cosine:.6f}") if c.stats is not None
                   else ("-", "-", "not compared"))
        t.add_row(f"{mark}{c.layer}", c.module, c.fork_class, "x".join(map(str, c.shape or [])) or "-", *figures)
    t.add_row("", "output boxes (px)", "", "", f"{result.boxes.max_abs:.3g}", "", "")
    t.add_row("", "output scores", "", "", f"{result.scores.max_abs:.3g}", "", "")
    for r in result.readings:
        t.add_row("", f"[dim]layer {r['layer']} {r['what']}: {escape(r['taken'])}[/]",
                  f"[dim]{escape(r['evidence'] or 'a guess')}[/]", "", "", "", "")
    return t
