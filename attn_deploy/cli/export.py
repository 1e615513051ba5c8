"""``export`` and ``lint``: a model to a checked ONNX file, and the TensorRT parser check."""

from __future__ import annotations

from typing import Any

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import (
    UNIT,
    ImageSize,
    Spinner,
    console,
    emit_json,
    gate,
    json_option,
    model_options,
    target_option,
)


@main.command()
@model_options
@click.option("--imgsz", type=ImageSize(), default="640", show_default=True, help="Input size: N or H,W.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Batch size (the example batch with --dynamic).")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width.")
@click.option("--opset", type=int, help="ONNX opset, 13 to 20 (default 17, or the highest the --target parses).")
@click.option("--nms", is_flag=True, help="End the graph in ONNX NonMaxSuppression (num_dets, det_boxes, det_scores, det_classes).")
@click.option("--topk", type=click.IntRange(1), default=100, show_default=True, help="With --nms: detections kept per image.")
@click.option("--end2end", is_flag=True, help="YOLO26: the NMS-free one-to-one head, output0 (N, max-det, 6): x1 y1 x2 y2 score class.")
@click.option("--max-det", type=click.IntRange(1, 3839), default=300, show_default=True, help="With --end2end: detections per image.")
@click.option("--iou-thres", type=UNIT, default=0.45, show_default=True, help="With --nms: IoU above which boxes are suppressed.")
@click.option("--conf-thres", type=UNIT, default=0.25, show_default=True, help="With --nms: minimum score.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output FILE.onnx (default ./NAME.onnx).")
@click.option("--no-check", is_flag=True, help="Skip the TensorRT lint and the parity check.")
@target_option
@json_option
def export(
    model_name: str | None, cfg: str | None, weights: str | None, imgsz: tuple[int, int], batch: int,
    dynamic: bool, opset: int | None, nms: bool, topk: int, end2end: bool, max_det: int, iou_thres: float,
    conf_thres: float, output: str | None, no_check: bool, target: Any, as_json: bool,
) -> None:
    """Export a model to ONNX (FILE.onnx + FILE.json), then lint it and check it against PyTorch.
    With --target: the opset that box's TensorRT parses, the rewrites it needs, its DLA placement."""
    from attn_deploy.exporter import ExportSpec, NmsOptions, export_model
    from attn_deploy.exporter.blockcheck import block_files
    from attn_deploy.exporter.export import target_opset
    from attn_deploy.models import load_model
    from attn_deploy.models.heads import set_end2end
    from attn_deploy.report import export_table
    from attn_deploy.sidecar import model_source

    if target is not None:
        opset = target_opset(target, opset)
    spec = ExportSpec(imgsz, batch, dynamic, opset if opset is not None else ExportSpec.opset)
    spec.check()  # sizes and opset refused before the model is built
    with Spinner("loading the model"):
        net = set_end2end(load_model(model_name, cfg, weights), max_det if end2end else None)
    source = model_source(model_name, cfg, weights, block_files(net))
    nms_opts = NmsOptions(topk, iou_thres, conf_thres) if nms else None
    with Spinner("exporting") as status:
        result = export_model(net, output, spec, nms_opts, check=not no_check, source=source, progress=status,
                              target=target)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(export_table(result))
    gate(result.passed, "export checks failed", result.failures())


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--target", "target_names", multiple=True, metavar="TARGET",
              help="Check for this box's TensorRT (and DLA); repeatable; 'all' for every named target, as a matrix.")
@json_option
def lint(onnx_file: str, target_names: tuple[str, ...], as_json: bool) -> None:
    """Check ONNX_FILE, then every node against TensorRT's ONNX parser support (exit 1 if any fails).
    With --target: that TensorRT's parser table and opsets, and where each layer runs on its DLA."""
    from attn_deploy.exporter import lint_onnx
    from attn_deploy.exporter.lint import TargetLint, lint_targets
    from attn_deploy.report import lint_table, target_lint_tables
    from attn_deploy.targets import get_target, targets

    if not target_names:
        report = lint_onnx(onnx_file)
        if as_json:
            emit_json(report.to_dict())
        else:
            console().print(lint_table(report))
        gate(report.passed, f"{len(report.findings)} node(s) TensorRT would refuse", [])
        return
    chosen = targets() if "all" in target_names else [get_target(t) for t in target_names]
    results: list[TargetLint] = lint_targets(onnx_file, chosen)
    if as_json:
        emit_json({"path": onnx_file, "targets": [r.to_dict() for r in results]})
    else:
        console().print(*target_lint_tables(results))
    refused = [r.target.name for r in results if not r.passed]
    gate(not refused, f"will not parse on {', '.join(refused)}", [])
