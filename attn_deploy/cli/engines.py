"""``build`` and ``bench``: TensorRT engines, and trtexec-style timing of any backend."""

from __future__ import annotations

from typing import Any

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import (
    ImageSize,
    Spinner,
    check_report,
    console,
    emit_json,
    json_option,
    report_option,
    target_option,
    write_report,
)


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output FILE.engine (default: beside the ONNX).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default="fp32", show_default=True,
              help="For a float32 ONNX; an FP16 or Q/DQ ONNX is built strongly typed.")
@click.option("--workspace", type=click.FloatRange(0.0, 1024.0, min_open=True), help="Builder workspace limit, GiB.")
@click.option("--min-shape", help="Dynamic input: smallest NxCxHxW.")
@click.option("--opt-shape", help="Dynamic input: the NxCxHxW to tune for.")
@click.option("--max-shape", help="Dynamic input: largest NxCxHxW.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Read and update this tactic timing cache.")
@click.option("--dla-core", type=click.IntRange(0, 15), help="Build for this DLA core (Jetson AGX/NX).")
@click.option("--gpu-fallback", is_flag=True, help="With --dla-core: layers DLA cannot run go to the GPU.")
@click.option("--calib-cache", type=click.Path(dir_okay=False), help="Implicit INT8 (TensorRT 8.x-10.x): the cache 'calib --cache' wrote.")
@target_option
@json_option
def build(
    onnx_file: str, output: str | None, precision: str, workspace: float | None, min_shape: str | None,
    opt_shape: str | None, max_shape: str | None, timing_cache: str | None, dla_core: int | None,
    gpu_fallback: bool, calib_cache: str | None, target: Any, as_json: bool,
) -> None:
    """Build a TensorRT engine from ONNX_FILE (FILE.engine + FILE.engine.json). With --target: its
    precisions, DLA and builder features are checked first, and this machine's TensorRT must be its."""
    from pathlib import Path

    from attn_deploy.engines.build import BuildOptions, build_engine, parse_shape
    from attn_deploy.report import build_table

    given = [x for x in (min_shape, opt_shape, max_shape) if x]
    if given and len(given) != 3:
        raise click.BadParameter("give all three of --min-shape, --opt-shape, --max-shape", param_hint="--min-shape")
    shapes = tuple(parse_shape(x) for x in given) if given else None
    opts = BuildOptions(precision, workspace, shapes, Path(timing_cache) if timing_cache else None, dla_core, gpu_fallback,
                        Path(calib_cache) if calib_cache else None, target)
    with Spinner("building the engine"):
        result = build_engine(onnx_file, output, opts)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(build_table(result))


DURATION = 3.0  # seconds of timing per target when neither --duration nor --iterations is given


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--backend", type=click.Choice(["torch", "ort", "trt"]), help="Default: torch for a model, ort for .onnx, trt for an engine.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), help="PyTorch on a GPU: fp16 runs the model in half.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True)
@click.option("--imgsz", type=ImageSize(), help="Input size (a static ONNX fixes it; default 640).")
@click.option("--warmup", type=click.FloatRange(0.0, 3600.0), default=1.0, show_default=True, help="Seconds of warm-up per target.")
@click.option("--iterations", type=click.IntRange(1, 10_000_000), help="Timed batches per target (instead of --duration).")
@click.option("--duration", type=click.FloatRange(0.0, 86_400.0, min_open=True),
              help="Seconds of timing per target (default 3; not with --iterations).")
@click.option("--cuda-graph", is_flag=True, help="PyTorch on a GPU: replay the forward as a CUDA graph.")
@click.option("--compare", is_flag=True, help="Several TARGET[@BACKEND[:PRECISION]] interleaved in one run; ratios to the first.")
@click.option("-o", "--output", default="bench", show_default=True, help="With --compare: writes OUTPUT.json and OUTPUT.png.")
@click.option("--triton", "triton_url", metavar="HOST:PORT", help="TARGET is a model on this Triton server: time requests to it.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True, help="With --triton.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="With --triton: requests in flight (each client sends its next when answered).")
@click.option("--image", "image_file", type=click.Path(dir_okay=False), help="With --triton and an ensemble: the encoded image to send (default: a grey JPEG).")
@report_option
@json_option
def bench(
    targets: tuple[str, ...], backend: str | None, precision: str | None, batch: int, imgsz: tuple[int, int] | None,
    warmup: float, iterations: int | None, duration: float | None, cuda_graph: bool, compare: bool, output: str,
    triton_url: str | None, protocol: str, concurrency: int, image_file: str | None, report_dir: str | None, as_json: bool,
) -> None:
    """Latency and throughput of a model name, an ONNX file or an engine (trtexec's statistics),
    or of a model on a Triton server (--triton), at a given concurrency."""
    check_report(report_dir)
    if iterations is not None and duration is not None:
        raise click.UsageError("--iterations and --duration both say when to stop: give one")
    duration = DURATION if duration is None else duration
    if triton_url is not None:
        _bench_triton(targets, triton_url, protocol, concurrency, batch, imgsz, image_file, warmup, iterations,
                      duration, as_json)
        return
    if compare:
        from attn_deploy.files import check_writable

        check_writable(f"{output}.json")
    from attn_deploy.engines import bench as bench_lib
    from attn_deploy.engines.workloads import split_spec, workload_for
    from attn_deploy.models.yolo import check_size_limits
    from attn_deploy.report import bench_table

    if len(targets) > 1 and not compare:
        raise click.UsageError("several targets need --compare")
    check_size_limits(imgsz or (640, 640), batch)
    loads = []
    for text in targets:
        target, b, p = split_spec(text) if compare else (text, None, None)
        loads.append(workload_for(target, b or backend, p or precision, batch, imgsz, cuda_graph, to_onnx=_in_memory_onnx))
    opts = bench_lib.BenchOptions(warmup, iterations, duration)
    with Spinner("timing") as status:
        results = bench_lib.compare(loads, opts, progress=lambda n, total: status(f"timing: {n} batches each"))
    doc = [r.to_dict() for r in results]
    if compare:
        from pathlib import Path

        from attn_deploy.engines.chart import bench_chart
        from attn_deploy.files import atomic_write, to_json

        atomic_write(Path(f"{output}.json"), to_json({"results": doc}).encode())
        bench_chart(results, Path(f"{output}.png"))
    if as_json:
        emit_json({"results": doc} if compare else doc[0])
    else:
        console(124).print(bench_table(results))
    from attn_deploy.htmlreport.pages import bench_page

    write_report(report_dir, lambda: bench_page(results), {"results": doc})


def _bench_triton(targets: tuple[str, ...], url: str, protocol: str, concurrency: int, batch: int,
                  imgsz: tuple[int, int] | None, image_file: str | None, warmup: float, iterations: int | None,
                  duration: float, as_json: bool) -> None:
    from pathlib import Path

    from attn_deploy.errors import UserError
    from attn_deploy.report import bench_table
    from attn_deploy.serve.client import ServerLoad, measure

    if len(targets) != 1:
        raise click.UsageError("--triton times one model of the server")
    image = None
    if image_file is not None:
        try:
            image = Path(image_file).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {image_file}: {e.strerror}") from None
    load = ServerLoad(url, targets[0], protocol, concurrency, batch, imgsz or (640, 640), image)
    with Spinner(f"timing {targets[0]} on {url}"):
        result = measure(load, warmup, duration, iterations)
    if as_json:
        emit_json({**result.to_dict(), "concurrency": concurrency})
    else:
        console(124).print(bench_table([result]))


def _in_memory_onnx(net: Any, batch: int, imgsz: tuple[int, int]) -> bytes:
    """``bench MODEL@ort``: the model exported in memory (the exporter sits above engines)."""
    from attn_deploy.exporter.torch2onnx import ExportSpec, torch_to_onnx

    return torch_to_onnx(net, ExportSpec(imgsz, batch))
