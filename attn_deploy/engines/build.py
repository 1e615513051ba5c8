"""``build``: an ONNX into a TensorRT engine, through Polygraphy's builder loaders.

Precision policy (DESIGN.md). An ONNX that carries its own precision (Q/DQ nodes, or float16
tensors) is built *strongly typed* on TensorRT 10 and newer: TensorRT keeps the types the
graph states, which is how TensorRT 11 builds everything. A float32 ONNX with
``--precision fp16|int8|best`` uses the builder flags on TensorRT 8.x-10.x, which still have
them; on 11 and newer the answer is the ``calib`` command that writes the right ONNX.
INT8 from a float32 ONNX needs calibration data: ``calib`` (explicit Q/DQ) is the way.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from attn_deploy.engines.trt import gpu_info, require_tensorrt
from attn_deploy.errors import UserError
from attn_deploy.files import atomic_write, sha256, to_json
from attn_deploy.sidecar import read_sidecar
from attn_deploy.targets import check_build

PRECISIONS = ("fp32", "fp16", "int8", "best")
QDQ = {"QuantizeLinear", "DequantizeLinear"}
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """How the builder is configured for an ONNX's own precision and the one requested."""

    strongly_typed: bool = False
    fp16: bool = False
    int8: bool = False
    note: str = ""


def onnx_precision(model: onnx.ModelProto) -> str:
    """'int8' for a Q/DQ graph, 'fp16' when float16 tensors appear, else 'fp32'."""
    g = model.graph
    if any(n.op_type in QDQ for n in g.node):
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    typed = [*g.input, *g.output, *g.value_info]
    if any(t.data_type == f16 for t in g.initializer) or any(v.type.tensor_type.elem_type == f16 for v in typed):
        return "fp16"
    return "fp32"


def plan_build(carried: str, requested: str, trt_major: int, onnx_name: str = "FILE.onnx", cache: bool = False) -> Plan:
    """The builder settings, or a UserError saying which command makes a buildable ONNX."""
    if requested not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if carried != "fp32":
        if trt_major >= 10:
            return Plan(strongly_typed=True, note=f"the ONNX carries its precision ({carried}): built strongly typed")
        return Plan(fp16=True, int8=carried == "int8", note=f"{carried} ONNX on TensorRT {trt_major}: precision flags")
    if requested == "fp32":
        return Plan()
    calib = f"attn-deploy calib {onnx_name} --precision {'fp16' if requested == 'fp16' else 'int8'}"
    if trt_major >= 11:
        raise UserError(f"TensorRT {trt_major} builds the precision the ONNX states; this ONNX is float32",
                        f"make a {requested} ONNX with '{calib}' and build that")
    if requested in ("int8", "best") and cache:
        return Plan(fp16=requested == "best", int8=True, note="implicit INT8 from the calibration cache")
    if requested == "int8":
        raise UserError("INT8 from a float32 ONNX needs calibration",
                        f"run '{calib}' and build its output, or pass the --calib-cache it can write")
    return Plan(fp16=True, note="float32 ONNX: TensorRT's FP16 flag" + (" (best: INT8 needs a Q/DQ ONNX)" if requested == "best" else ""))


def _dla_placement(model: onnx.ModelProto, opts: BuildOptions, name: str) -> dict[str, Any] | None:
    """With --dla-core on a target: where each layer would run (``targets/dla.py``); a graph the
    DLA cannot take at all, or one with layers off it and no --gpu-fallback, is refused here."""
    from attn_deploy.targets.dla import dla_report

    if opts.dla_core is None:
        return None
    report = dla_report(model, opts.target)
    if report.refused:
        raise UserError(f"--dla-core: {name}: {report.refused}")
    off = report.fallbacks()
    if off and not opts.gpu_fallback:
        raise UserError(f"--dla-core: {len(off)} node(s) of {name} cannot run on {opts.target.name}'s DLA (first: "
                        f"{off[0].node}, {off[0].why[:60]}); add --gpu-fallback to run them on the GPU")
    doc = report.to_dict()
    return {k: doc[k] for k in ("nodes", "on_dla", "dla_mac_share", "switches", "subgraphs")}


def parse_shape(text: str) -> Shape:
    """'1x3x640x640' -> (1, 3, 640, 640)."""
    if not re.fullmatch(r"\d+(x\d+)*", text.strip()):
        raise UserError(f"{text!r} is not a shape like 1x3x640x640")
    return tuple(int(v) for v in text.strip().split("x"))


@dataclass(frozen=True)
class BuildOptions:
    """``build``'s options: ``precision`` fp32, fp16, int8 or best (for a float32 ONNX; one that
    states its precision is built strongly typed), builder workspace, (min, opt, max) shapes for
    a dynamic input, timing cache, DLA core and GPU fallback, an implicit-INT8 cache."""

    precision: str = "fp32"
    workspace_gib: float | None = None
    shapes: tuple[Shape, Shape, Shape] | None = None  # min, opt, max for a dynamic input
    timing_cache: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    calib_cache: Path | None = None  # implicit INT8 (TensorRT 8.x-10.x) from 'calib --cache'
    target: Any = None  # attn_deploy.targets.Target: the box the engine is for


@dataclass
class BuildResult:
    engine: Path
    sidecar: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": str(self.engine), **self.sidecar}


def input_profile(model: onnx.ModelProto, shapes: tuple[Shape, Shape, Shape] | None,
                  export: dict[str, Any] | None) -> tuple[str, tuple[Shape, Shape, Shape]] | None:
    """(input name, (min, opt, max)) for a dynamic input; None for a static one."""
    (inp,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if None not in dims:
        if shapes:
            raise UserError(f"{inp.name} is static {'x'.join(map(str, dims))}: --min/--opt/--max-shape apply to dynamic inputs")
        return None
    if shapes is None:
        if not export or "imgsz" not in export:
            raise UserError(f"{inp.name} is dynamic ({dims}): give --min-shape, --opt-shape and --max-shape")
        one = (1, 3, *export["imgsz"])
        shapes = (one, one, one)
    for s in shapes:
        if len(s) != len(dims) or any(d is not None and d != v for d, v in zip(dims, s)):
            raise UserError(f"shape {'x'.join(map(str, s))} does not fit {inp.name} {dims}")
    lo, opt, hi = shapes
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise UserError("profile shapes must satisfy min <= opt <= max in every dimension")
    return inp.name, shapes


@dataclass(frozen=True)
class EngineFacts:
    """What one build found and decided: the TensorRT that built, the GPU it built on, the
    builder plan, the ONNX's own precision, the input profile and the DLA placement."""

    tensorrt: str
    gpu: dict[str, Any] | None
    plan: Plan
    onnx_precision: str
    profile: tuple[str, tuple[Shape, Shape, Shape]] | None = None
    placement: dict[str, Any] | None = None


def engine_sidecar(onnx_file: str, onnx_sha256: str, export: dict[str, Any] | None, opts: BuildOptions,
                   made: EngineFacts, seconds: float) -> dict[str, Any]:
    """The engine's sidecar ``FILE.engine.json`` from what the build was given and found (its own
    function so that ``tools/json_schemas.py`` can describe it where no TensorRT is)."""
    profile, plan = made.profile, made.plan
    return {
        "tensorrt": made.tensorrt, "gpu": made.gpu,
        "precision": opts.precision, "onnx_precision": made.onnx_precision, "plan": asdict(plan),
        "profiles": [{"input": profile[0], "min": profile[1][0], "opt": profile[1][1], "max": profile[1][2]}] if profile else [],
        "onnx": {"file": onnx_file, "sha256": onnx_sha256}, "export": export,
        "dla": {"core": opts.dla_core, "gpu_fallback": opts.gpu_fallback} if opts.dla_core is not None else None,
        "target": {**opts.target.to_dict(), "dla_placement": made.placement} if opts.target is not None else None,
        "calib_cache": {"path": str(opts.calib_cache.resolve()), "sha256": sha256(opts.calib_cache.read_bytes())}
        if plan.int8 and opts.calib_cache else None,
        "build_seconds": round(seconds, 1),
    }


def build_engine(onnx_path: str | Path, output: str | Path | None, opts: BuildOptions) -> BuildResult:
    """A TensorRT engine from ``onnx_path`` (default output: beside it, ``.engine``) and its
    sidecar ``.engine.json``; a UserError when TensorRT is missing or refuses the graph."""
    from attn_deploy.onnxfile import read_onnx

    src = Path(onnx_path)
    model = read_onnx(src)
    raw = src.read_bytes()
    export = read_sidecar(src)
    profile = input_profile(model, opts.shapes, export)
    carried = onnx_precision(model)
    if opts.target is not None:  # decided for the target before any TensorRT is asked
        check_build(opts.target, opts.precision, carried, opts.dla_core, opts.calib_cache is not None)
        plan_build(carried, opts.precision, opts.target.version[0], src.name, opts.calib_cache is not None)
        placement = _dla_placement(model, opts, src.name)
    else:
        placement = None
    trt = require_tensorrt()
    if opts.target is not None and tuple(int(p) for p in trt.__version__.split(".")[:2]) != opts.target.version[:2]:
        raise UserError(f"this machine's TensorRT {trt.__version__} cannot build for {opts.target.name} (TensorRT "
                        f"{opts.target.tensorrt}): engines do not move between TensorRT versions; build on the box")
    if opts.calib_cache is not None and not opts.calib_cache.is_file():
        raise UserError(f"calibration cache not found: {opts.calib_cache}")
    plan = plan_build(carried, opts.precision, int(trt.__version__.split(".")[0]), src.name, opts.calib_cache is not None)
    out = Path(output) if output else src.with_suffix(".engine")
    start = time.perf_counter()
    data = _build(src, plan, profile, opts)
    gpu = gpu_info()
    made = EngineFacts(trt.__version__, gpu.to_dict() if gpu else None, plan, carried, profile, placement)
    sidecar = engine_sidecar(src.name, sha256(raw), export, opts, made, time.perf_counter() - start)
    atomic_write(out, data)
    atomic_write(out.with_name(out.name + ".json"), to_json(sidecar).encode())
    return BuildResult(out, sidecar)


def _calibrator(cache: Path, trt_version: str) -> Any:
    from attn_deploy.engines.calibrator import trt_calibrator

    return trt_calibrator(cache, trt_version)  # a malformed cache is a user error here, not in TensorRT


def _build(src: Path, plan: Plan, profile: tuple[str, tuple[Shape, Shape, Shape]] | None, opts: BuildOptions,
           mark: list[str] | None = None) -> bytes:
    """Polygraphy's loaders: parse, configure, build; TensorRT's failure becomes one line.
    ``mark``: the network's outputs become exactly these tensors (a debug engine for
    ``parity --per-block``: the layer boundaries only, never every tensor)."""
    import tensorrt as trt
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        ModifyNetworkOutputs,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )

    network = NetworkFromOnnxPath(str(src), strongly_typed=True) if plan.strongly_typed else NetworkFromOnnxPath(str(src))
    if mark:
        network = ModifyNetworkOutputs(network, outputs=list(mark))
    profiles = [Profile().add(profile[0], *profile[1])] if profile else None
    config: Any = CreateConfig(
        fp16=plan.fp16, int8=plan.int8, profiles=profiles,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(opts.workspace_gib * 2**30)} if opts.workspace_gib else None,
        load_timing_cache=str(opts.timing_cache) if opts.timing_cache and opts.timing_cache.is_file() else None,
        use_dla=opts.dla_core is not None, allow_gpu_fallback=opts.gpu_fallback,
        calibrator=_calibrator(opts.calib_cache, trt.__version__) if plan.int8 and opts.calib_cache else None,
    )
    if opts.dla_core is not None:
        config = PostprocessConfig(config, lambda _b, _n, c: setattr(c, "DLA_core", opts.dla_core))
    try:
        return bytes(EngineBytesFromNetwork(network, config, save_timing_cache=str(opts.timing_cache) if opts.timing_cache else None)())
    except Exception as e:  # PolygraphyException carries TensorRT's error log
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]  # TensorRT's own log went to stderr
        raise UserError(f"TensorRT could not build {src.name}: {last}") from e
