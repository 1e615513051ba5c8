"""The ``attn-deploy`` command line: one click group, one short function per verb.

Each verb parses its options, calls one library function and prints the result: a table on
stdout, or with ``--json`` one JSON document on stdout and nothing else there. Library errors
(``AttnDeployError``) become one line on stderr and their exit code.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable

import click

from attn_deploy import __version__
from attn_deploy.errors import AttnDeployError, UserError


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AttnDeployError as e:
            click.echo(f"attn-deploy: error: {e}", err=True)
            ctx.exit(e.exit_code)


class ImageSize(click.ParamType):
    """``640`` (square) or ``480,640`` / ``480x640`` (H, W)."""

    name = "N|H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = re.split(r"[x,]", str(value).strip().lower())
        if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
            h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            return h, w
        self.fail(f"{value!r} is not an image size (N, or H,W)", param, ctx)


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--model / --cfg / --weights, shared by every verb that starts from a PyTorch model."""
    f = click.option("--weights", type=click.Path(dir_okay=False), help="yolov5/YOLOAir checkpoint or state dict (.pt).")(f)
    f = click.option("--cfg", type=click.Path(dir_okay=False), help="A yolov5-format model yaml.")(f)
    f = click.option("--model", "model_name", metavar="NAME", help="Built-in model, e.g. yolov5s-ca (see 'models').")(f)
    return f


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def report_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--report", "report_dir", type=click.Path(file_okay=False),
                        help="Also write DIR/report.html (self-contained, opens offline) and DIR/report.json.")(f)


def _write_report(directory: str | None, page: Callable[[], Any], doc: dict[str, Any]) -> None:
    """Write the report when asked (before any gate exits: a failing run is when it is needed)."""
    if directory is None:
        return
    from attn_deploy.htmlreport import write_report

    try:
        path = write_report(directory, page(), doc)
    except OSError as e:
        raise UserError(f"cannot write the report in {directory}: {e.strerror or e}") from None
    click.echo(f"attn-deploy: report written to {path}", err=True)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def _console(width: int = 100) -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=False, width=max(width, Console().width))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attn-deploy")
def main() -> None:
    """Ship attention-augmented YOLOv5 detectors to NVIDIA GPUs, with proof."""


@main.command()
@json_option
def models(as_json: bool) -> None:
    """List the built-in models and attention modules."""
    from attn_deploy.models import model_names
    from attn_deploy.models.attention import list_attention
    from attn_deploy.report import models_table

    if as_json:
        emit_json({"models": model_names(), "attention": list_attention()})
    else:
        _console().print(*models_table())


@main.command()
@model_options
@click.option("--imgsz", type=ImageSize(), default="640", show_default=True, help="Input size: N or H,W.")
@json_option
def info(model_name: str | None, cfg: str | None, weights: str | None, imgsz: tuple[int, int], as_json: bool) -> None:
    """Parameters, GFLOPs and the per-layer table of a model."""
    from attn_deploy.models import check_imgsz, load_model, model_info
    from attn_deploy.report import info_table

    net = load_model(model_name, cfg, weights)
    result = model_info(net, check_imgsz(imgsz, int(net.stride.max())))
    if as_json:
        emit_json(result.to_dict())
    else:
        _console().print(info_table(result))


@main.command()
@model_options
@click.option("--imgsz", type=ImageSize(), default="640", show_default=True, help="Input size: N or H,W.")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size (the example batch with --dynamic).")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset, 13 to 20.")
@click.option("--nms", is_flag=True, help="End the graph in ONNX NonMaxSuppression (num_dets, det_boxes, det_scores, det_classes).")
@click.option("--topk", type=int, default=100, show_default=True, help="With --nms: detections kept per image.")
@click.option("--iou-thres", type=float, default=0.45, show_default=True, help="With --nms: IoU above which boxes are suppressed.")
@click.option("--conf-thres", type=float, default=0.25, show_default=True, help="With --nms: minimum score.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output FILE.onnx (default ./NAME.onnx).")
@click.option("--no-check", is_flag=True, help="Skip the TensorRT lint and the parity check.")
@json_option
def export(
    model_name: str | None, cfg: str | None, weights: str | None, imgsz: tuple[int, int], batch: int,
    dynamic: bool, opset: int, nms: bool, topk: int, iou_thres: float, conf_thres: float,
    output: str | None, no_check: bool, as_json: bool,
) -> None:
    """Export a model to ONNX (FILE.onnx + FILE.json), then lint it and check it against PyTorch."""
    from attn_deploy.exporter import ExportSpec, NmsOptions, export_model
    from attn_deploy.models import load_model
    from attn_deploy.report import export_table

    with _Spinner("loading the model"):
        net = load_model(model_name, cfg, weights)
    source = {k: v for k, v in (("model", model_name), ("cfg", cfg), ("weights", weights)) if v}
    nms_opts = NmsOptions(topk, iou_thres, conf_thres) if nms else None
    with _Spinner("exporting") as status:
        result = export_model(
            net, output, ExportSpec(imgsz, batch, dynamic, opset), nms_opts, check=not no_check,
            source=source, progress=status,
        )
    if as_json:
        emit_json(result.to_dict())
    else:
        _console().print(export_table(result))
    _gate(result.passed, "export checks failed", result.failures())


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@json_option
def lint(onnx_file: str, as_json: bool) -> None:
    """Check every node of ONNX_FILE against TensorRT's ONNX parser support (exit 1 if any fails)."""
    from attn_deploy.exporter import lint_onnx
    from attn_deploy.report import lint_table

    report = lint_onnx(onnx_file)
    if as_json:
        emit_json(report.to_dict())
    else:
        _console().print(lint_table(report))
    _gate(report.passed, f"{len(report.findings)} node(s) TensorRT would refuse", [])


@main.command()
@model_options
@click.option("--against", "candidate", required=True, type=click.Path(dir_okay=False), help="The candidate: FILE.onnx.")
@click.option("--data", type=click.Path(), help="Images: a folder, an image, or a YOLO data.yaml (its val split, with labels: mAP).")
@click.option("--imgsz", type=ImageSize(), help="Input size for a candidate with dynamic H, W (default 640).")
@click.option("--max-images", type=int, help="Use at most N images.")
@click.option("--max-map-drop", type=float, default=0.5, show_default=True, help="Gate: mAP50-95 drop in points.")
@click.option("--min-agreement", type=float, default=0.95, show_default=True, help="Gate: detection agreement.")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="Unreadable images or labels: leave them out, or stop.")
@click.option("--per-block", is_flag=True, help="Also each yaml layer's accumulated and local error, and the culprit.")
@click.option("--block-images", type=click.IntRange(1), default=32, show_default=True, help="With --per-block: images used.")
@click.option("--block-tolerance", type=float, default=1e-2, show_default=True,
              help="With --per-block: relative local error above which the worst layer is named the culprit.")
@report_option
@json_option
def parity(
    model_name: str | None, cfg: str | None, weights: str | None, candidate: str, data: str | None,
    imgsz: tuple[int, int] | None, max_images: int | None, max_map_drop: float, min_agreement: float,
    on_error: str, per_block: bool, block_images: int, block_tolerance: float, report_dir: str | None, as_json: bool,
) -> None:
    """Judge a deployable model against PyTorch: tensors, detections, mAP (exit 1 if outside the gates)."""
    from attn_deploy.engines import runner_for
    from attn_deploy.models import load_model
    from attn_deploy.parity.blocks import open_blocks
    from attn_deploy.parity.check import Gates, ParityOptions, check_parity
    from attn_deploy.report import blocks_table, parity_table

    if max_images is not None and max_images < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-images")
    net = load_model(model_name, cfg, weights)
    opts = ParityOptions(data, imgsz, max_images, on_error, Gates(min_agreement, max_map_drop),
                         block_images=block_images, block_tolerance=block_tolerance, examples=6 if report_dir else 0)
    with _Spinner("comparing") as status:
        blocks = open_blocks(candidate, net) if per_block else None
        result = check_parity(net, runner_for(candidate), candidate, opts, blocks=blocks,
                              progress=lambda done, total: status(f"comparing: {done}/{total} images"))
    for line in result.skipped:
        click.echo(f"attn-deploy: skipped {line}", err=True)
    if as_json:
        emit_json(result.to_dict())
    else:
        _console().print(parity_table(result))
        if result.blocks is not None:
            _console(120).print(blocks_table(result.blocks))
    from attn_deploy.htmlreport.pages import parity_page

    _write_report(report_dir, lambda: parity_page(result, list(net.names)), result.to_dict())
    _gate(result.passed, "parity gate failed", result.failures())


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output FILE.engine (default: beside the ONNX).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default="fp32", show_default=True,
              help="For a float32 ONNX; an FP16 or Q/DQ ONNX is built strongly typed.")
@click.option("--workspace", type=float, help="Builder workspace limit, GiB.")
@click.option("--min-shape", help="Dynamic input: smallest NxCxHxW.")
@click.option("--opt-shape", help="Dynamic input: the NxCxHxW to tune for.")
@click.option("--max-shape", help="Dynamic input: largest NxCxHxW.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Read and update this tactic timing cache.")
@click.option("--dla-core", type=int, help="Build for this DLA core (Jetson AGX/NX).")
@click.option("--gpu-fallback", is_flag=True, help="With --dla-core: layers DLA cannot run go to the GPU.")
@click.option("--calib-cache", type=click.Path(dir_okay=False), help="Implicit INT8 (TensorRT 8.x-10.x): the cache 'calib --cache' wrote.")
@json_option
def build(
    onnx_file: str, output: str | None, precision: str, workspace: float | None, min_shape: str | None,
    opt_shape: str | None, max_shape: str | None, timing_cache: str | None, dla_core: int | None,
    gpu_fallback: bool, calib_cache: str | None, as_json: bool,
) -> None:
    """Build a TensorRT engine from ONNX_FILE (FILE.engine + FILE.engine.json)."""
    from pathlib import Path

    from attn_deploy.engines.build import BuildOptions, build_engine, parse_shape
    from attn_deploy.report import build_table

    given = [x for x in (min_shape, opt_shape, max_shape) if x]
    if given and len(given) != 3:
        raise click.BadParameter("give all three of --min-shape, --opt-shape, --max-shape", param_hint="--min-shape")
    shapes = tuple(parse_shape(x) for x in given) if given else None
    opts = BuildOptions(precision, workspace, shapes, Path(timing_cache) if timing_cache else None, dla_core, gpu_fallback,
                        Path(calib_cache) if calib_cache else None)
    with _Spinner("building the engine"):
        result = build_engine(onnx_file, output, opts)
    if as_json:
        emit_json(result.to_dict())
    else:
        _console().print(build_table(result))


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--backend", type=click.Choice(["torch", "ort", "trt"]), help="Default: torch for a model, ort for .onnx, trt for an engine.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), help="PyTorch on a GPU: fp16 runs the model in half.")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--imgsz", type=ImageSize(), help="Input size (a static ONNX fixes it; default 640).")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Seconds of warm-up per target.")
@click.option("--iterations", type=int, help="Timed batches per target (instead of --duration).")
@click.option("--duration", type=float, default=3.0, show_default=True, help="Seconds of timing per target.")
@click.option("--cuda-graph", is_flag=True, help="PyTorch on a GPU: replay the forward as a CUDA graph.")
@click.option("--compare", is_flag=True, help="Several TARGET[@BACKEND[:PRECISION]] interleaved in one run; ratios to the first.")
@click.option("-o", "--output", default="bench", show_default=True, help="With --compare: writes OUTPUT.json and OUTPUT.png.")
@report_option
@json_option
def bench(
    targets: tuple[str, ...], backend: str | None, precision: str | None, batch: int, imgsz: tuple[int, int] | None,
    warmup: float, iterations: int | None, duration: float, cuda_graph: bool, compare: bool, output: str,
    report_dir: str | None, as_json: bool,
) -> None:
    """Latency and throughput of a model name, an ONNX file or an engine (trtexec's statistics)."""
    from attn_deploy.engines import bench as bench_lib
    from attn_deploy.engines.workloads import split_spec, workload_for
    from attn_deploy.report import bench_table

    if len(targets) > 1 and not compare:
        raise click.UsageError("several targets need --compare")
    loads = []
    for text in targets:
        target, b, p = split_spec(text) if compare else (text, None, None)
        loads.append(workload_for(target, b or backend, p or precision, batch, imgsz, cuda_graph))
    opts = bench_lib.BenchOptions(warmup, iterations, duration)
    with _Spinner("timing") as status:
        results = bench_lib.compare(loads, opts, progress=lambda n, total: status(f"timing: {n} batches each"))
    doc = [r.to_dict() for r in results]
    if compare:
        from pathlib import Path

        from attn_deploy.engines.chart import bench_chart
        from attn_deploy.files import atomic_write

        atomic_write(Path(f"{output}.json"), json.dumps({"results": doc}, indent=2).encode())
        bench_chart(results, Path(f"{output}.png"))
    if as_json:
        emit_json({"results": doc} if compare else doc[0])
    else:
        _console(124).print(bench_table(results))
    from attn_deploy.htmlreport.pages import bench_page

    _write_report(report_dir, lambda: bench_page(results), {"results": doc})


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["int8", "fp16"]), required=True)
@click.option("--data", type=click.Path(), help="Calibration images: a folder or a data.yaml (its train split).")
@click.option("--images", type=click.IntRange(1), default=64, show_default=True, help="Calibration images used.")
@click.option("--method", type=click.Choice(["entropy", "max", "percentile"]), default="max", show_default=True,
              help="INT8 activation calibration.")
@click.option("--exclude", multiple=True, default=("auto",), show_default=True,
              help="auto (measure), none (quantize everything), or node-name patterns (regex), repeatable.")
@click.option("--val", type=click.Path(), help="Validation images (default: --data's val split).")
@click.option("--max-map-drop", type=float, default=0.5, show_default=True,
              help="Budget: mAP50-95 points (disagreement %% without labels).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default FILE.int8.onnx / FILE.fp16.onnx.")
@click.option("--cache", type=click.Path(dir_okay=False), help="INT8: also write a TensorRT calibration cache.")
@report_option
@json_option
def calib(
    onnx_file: str, precision: str, data: str | None, images: int, method: str, exclude: tuple[str, ...],
    val: str | None, max_map_drop: float, output: str | None, cache: str | None, report_dir: str | None, as_json: bool,
) -> None:
    """FP16 or INT8 (Q/DQ) ONNX from a float32 one, measured on validation images (exit 1 over budget)."""
    from attn_deploy.calib.calibrate import CalibOptions, calibrate
    from attn_deploy.report import calib_table

    if len(exclude) > 1 and ("auto" in exclude or "none" in exclude):
        raise click.BadParameter("auto and none stand alone", param_hint="--exclude")
    opts = CalibOptions(precision, data, images, method, exclude, val, max_map_drop, output, cache)
    with _Spinner("calibrating") as status:
        result = calibrate(onnx_file, opts, progress=status)
    if as_json:
        emit_json(result.to_dict())
    else:
        _console().print(calib_table(result))
    from attn_deploy.htmlreport.pages import calib_page

    _write_report(report_dir, lambda: calib_page(result), result.to_dict())
    _gate(result.passed, "calibration outside the budget", result.failures())


def _gate(passed: bool, what: str, details: list[str]) -> None:
    """Exit 1 after a failed check, saying by how much on stderr."""
    if not passed:
        detail = f": {'; '.join(details)}" if details else ""
        click.echo(f"attn-deploy: {what}{detail}", err=True)
        raise SystemExit(1)


class _Spinner:
    """A transient spinner on stderr for long steps; silent when stderr is not a terminal."""

    def __init__(self, message: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = self.console.status(message) if self.console.is_terminal else None

    def __enter__(self) -> Callable[[str], None]:
        if self.live is not None:
            self.live.__enter__()
        return self.update

    def update(self, message: str) -> None:
        if self.live is not None:
            self.live.update(message)

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


def run() -> None:  # pragma: no cover - console-script shim
    main(prog_name="attn-deploy")

