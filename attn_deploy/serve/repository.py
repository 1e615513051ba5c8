"""``serve``: a Triton model repository for an exported ONNX or a built engine, from its sidecar.

``DIR/NAME/config.pbtxt`` and ``DIR/NAME/1/model.onnx`` (platform ``onnxruntime_onnx``) or
``model.plan`` (``tensorrt_plan``). ``max_batch_size`` and the dims follow the graph: a
dynamic batch axis takes ``--max-batch``; a graph exported with batch 1 serves batch 1 only;
an engine serves at most its profile's largest batch (a larger ``--max-batch`` is refused).
Dynamic H and W become -1. ``--ensemble`` adds ``NAME_pre`` and ``NAME_post`` (python
backend, ``serve/steps.py``: parity's own letterbox, NMS and box mapping) and ``NAME_e2e``,
which takes an encoded image (or a raw HxWx3 uint8 BGR one) and returns (K, 6) detections,
x1 y1 x2 y2 score class, in the original image's pixels. ``backend="python"`` serves the
ONNX through ONNX Runtime inside the python backend instead (servers without the
onnxruntime backend, such as NVIDIA's pytriton wheel).

The repository is written into a staging folder beside it and moved into place model by
model, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attn_deploy import layouts
from attn_deploy.errors import UserError
from attn_deploy.serve.config import (
    Tensor,
    check_config,
    check_name,
    ensemble_config,
    model_config,
    to_text,
)
from attn_deploy.serve.steps import DETECTIONS, PLACEMENT
from attn_deploy.sidecar import export_sidecar

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
STEP = "from attn_deploy.serve.steps import {cls} as TritonPythonModel  # attn-deploy serve: {what}\n"
DEFAULT_BATCH = 8
SHIP_NMS = {"topk": 100, "iou_thres": 0.45, "conf_thres": 0.25}  # what parity's detections keep


@dataclass
class ServeOptions:
    """What ``attn-deploy serve`` writes; see the module's text."""

    repository: str | Path
    name: str | None = None
    max_batch: int | None = None  # default: what the graph takes, at most DEFAULT_BATCH
    instances: int = 1
    max_queue_delay_us: int = 100
    ensemble: bool = False
    raw_input: bool = False
    backend: str = "native"
    python_env: str | None = None
    imgsz: tuple[int, int] | None = None
    target: Any = None  # attn_deploy.targets.Target: an engine must have been built for it

    def check(self) -> None:
        if self.max_batch is not None and not 1 <= self.max_batch <= 4096:
            raise UserError(f"--max-batch must be 1 to 4096, not {self.max_batch}")
        if not 1 <= self.instances <= 64:
            raise UserError(f"--instances must be 1 to 64, not {self.instances}")
        if not 0 <= self.max_queue_delay_us <= 10_000_000:
            raise UserError(f"--max-queue-delay-us must be 0 to 10000000, not {self.max_queue_delay_us}")
        if self.backend not in ("native", "python"):
            raise UserError(f"backend must be native or python, not {self.backend!r}")


@dataclass
class ServeResult:
    repository: Path
    models: dict[str, str] = field(default_factory=dict)  # name -> config.pbtxt text
    max_batch: int = 0
    platform: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"repository": str(self.repository), "models": sorted(self.models), "max_batch": self.max_batch,
                "platform": self.platform}


@dataclass
class Graph:
    """What the repository needs to know of the served file."""

    path: Path
    engine: bool
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch: int
    imgsz: tuple[int, int]
    layout: str
    name: str


def read_graph(path: str | Path, opts: ServeOptions) -> Graph:
    """The served file's tensors and batch limit from its sidecar (and an engine's profile)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found: {p}")
    engine = p.suffix.lower() in ENGINE_SUFFIXES
    if not engine and p.suffix.lower() != ".onnx":
        raise UserError(f"{p}: serve takes an .onnx or a TensorRT engine (.engine, .plan)")
    side = export_sidecar(p)
    if side is None or not side.get("inputs") or not side.get("outputs"):
        raise UserError(f"{p} has no export sidecar ({p.name}{'.json' if engine else ' -> .json'})",
                        "serve reads the tensors, letterbox and head from what export (and build) wrote beside it")
    inputs, outputs = [_tensor(t) for t in side["inputs"]], [_tensor(t) for t in side["outputs"]]
    batch = side["inputs"][0]["shape"][0]
    limit = _engine_batch(p, batch) if engine else (4096 if isinstance(batch, str) else int(batch))
    if engine and (profile := _engine_profile(p)) is not None:  # the engine fixes what its profile fixes
        lo, hi = profile["min"][1:], profile["max"][1:]
        inputs[0] = Tensor(inputs[0].name, inputs[0].dtype, tuple(a if a == b else -1 for a, b in zip(lo, hi)))
    if opts.max_batch is not None and opts.max_batch > limit:
        where = "its profile serves" if engine else "it was exported with a fixed batch of"
        raise UserError(f"{p}: --max-batch {opts.max_batch} is more than {where} {limit}",
                        "export with --dynamic (and build with a larger profile) to batch more")
    max_batch = opts.max_batch if opts.max_batch is not None else min(DEFAULT_BATCH, limit)
    imgsz = opts.imgsz or tuple(int(v) for v in side.get("imgsz") or (640, 640))
    fixed = inputs[0].dims[1:]
    if -1 not in fixed and opts.imgsz is not None and tuple(opts.imgsz) != tuple(fixed):
        raise UserError(f"{p} takes {fixed[0]}x{fixed[1]} images, not --imgsz {opts.imgsz[0]},{opts.imgsz[1]}",
                        "--imgsz is for graphs exported with --dynamic")
    return Graph(p, engine, inputs, outputs, max_batch, imgsz,  # type: ignore[arg-type]
                 side.get("output_layout") or layouts.YOLOV5, str(side.get("model") or p.stem))


def _tensor(t: dict[str, Any]) -> Tensor:
    dims = tuple(-1 if isinstance(d, str) or d in (None, 0) else int(d) for d in t["shape"][1:])
    return Tensor(str(t["name"]), str(t["dtype"]), dims)


def _engine_profile(path: Path) -> dict[str, Any] | None:
    """The engine's optimisation profile from its build sidecar (None: a static engine)."""
    side = path.with_name(path.name + ".json")
    try:
        profiles = json.loads(side.read_text()).get("profiles") or []
        if profiles and not all(len(profiles[0][k]) == 4 for k in ("min", "max")):
            raise ValueError("a profile of another rank")
        return {k: [int(v) for v in profiles[0][k]] for k in ("min", "opt", "max")} if profiles else None
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise UserError(f"{path}: its build sidecar {side.name} does not say which shapes it takes") from None


def _engine_batch(path: Path, batch: Any) -> int:
    """The largest batch an engine takes: its profile's max (a static engine: its one batch)."""
    profile = _engine_profile(path)
    if profile is not None:
        return profile["max"][0]
    if isinstance(batch, str):
        raise UserError(f"{path}: a dynamic batch axis but no profile in its build sidecar")
    return int(batch)


def check_serve_target(path: Path, engine: bool, target: Any) -> None:
    """``serve --target T``: an engine must say it was built for T (its sidecar's ``target``);
    an ONNX file must parse on T's TensorRT (Triton on T may hand it to TensorRT)."""
    if engine:
        from attn_deploy.engines.trt import engine_sidecar

        built = ((engine_sidecar(path) or {}).get("target") or {}).get("name")
        if built != target.name:
            raise UserError(f"{path.name} was built for {built or 'no named target'}, not {target.name}: "
                            f"build it with --target {target.name} on that box")
        return
    from attn_deploy.exporter.lint import lint_onnx

    report = lint_onnx(path, target)
    if not report.passed:
        f = report.findings[0]
        raise UserError(f"{path.name} does not parse on {target.name} (TensorRT {target.tensorrt}): "
                        f"{f.node} ({f.op}): {f.reason}; export it with --target {target.name}")


def write_repository(path: str | Path, opts: ServeOptions) -> ServeResult:
    """Write the model repository (see the module's text); every config is parsed back and
    held against the graph before anything is moved into place."""
    opts.check()
    graph = read_graph(path, opts)
    name = check_name(opts.name or graph.name)
    if graph.engine and opts.backend == "python":
        raise UserError("the python-backend stand-in runs an ONNX file in ONNX Runtime, not a TensorRT engine")
    if opts.target is not None:
        check_serve_target(Path(path), graph.engine, opts.target)
    repo = Path(opts.repository)
    _check_repository(repo)
    models = _models(graph, name, opts)
    result = ServeResult(repo, max_batch=graph.max_batch, platform=models[name][0].platform or models[name][0].backend)
    staging = Path(tempfile.mkdtemp(prefix=".attn-deploy-serve-", dir=repo))
    try:
        for model, (cfg, files) in models.items():
            text = to_text(cfg)
            (staging / model / "1").mkdir(parents=True)
            (staging / model / "config.pbtxt").write_text(text)
            for rel, data in files.items():
                (staging / model / rel).write_bytes(data)
            result.models[model] = text
        for model in models:  # into place, one model at a time
            target = repo / model
            if target.exists():
                shutil.rmtree(target)
            (staging / model).rename(target)
    except OSError as e:
        raise UserError(f"cannot write the repository {repo}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _check_repository(repo: Path) -> None:
    try:
        repo.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=repo, prefix=".attn-deploy-probe-")
        probe.close()
    except OSError as e:
        raise UserError(f"cannot write the repository {repo}: {e.strerror or type(e).__name__}") from None


def _models(graph: Graph, name: str, opts: ServeOptions) -> dict[str, tuple[Any, dict[str, bytes]]]:
    """name -> (ModelConfig, files under the model folder) for every model of the repository."""
    env = {"EXECUTION_ENV_PATH": str(Path(opts.python_env).resolve())} if opts.python_env else {}
    delay = opts.max_queue_delay_us
    data = graph.path.read_bytes()
    if graph.engine:
        detector = model_config(name, graph.inputs, graph.outputs, graph.max_batch, platform="tensorrt_plan",
                                instances=opts.instances, kind="KIND_GPU", queue_delay_us=delay)
        files = {"1/model.plan": data}
    elif opts.backend == "python":
        detector = model_config(name, graph.inputs, graph.outputs, graph.max_batch, backend="python",
                                instances=opts.instances, kind="KIND_CPU", queue_delay_us=delay, parameters=env)
        files = {"1/model.onnx": data, "1/model.py": STEP.format(cls="OnnxDetector", what="detector").encode()}
    else:
        detector = model_config(name, graph.inputs, graph.outputs, graph.max_batch, platform="onnxruntime_onnx",
                                instances=opts.instances, kind="KIND_AUTO", queue_delay_us=delay)
        files = {"1/model.onnx": data}
    problems = check_config(detector, graph.inputs, graph.outputs, graph.max_batch)
    if problems:
        raise AssertionError(f"{name}: {problems}")  # built from the graph: a disagreement is a bug
    models = {name: (detector, files)}
    if opts.ensemble:
        models.update(_ensemble(graph, name, opts, env))
    return models


def _ensemble(graph: Graph, name: str, opts: ServeOptions, env: dict[str, str]) -> dict[str, tuple[Any, dict[str, bytes]]]:
    image = Tensor("IMAGE", "uint8", (-1, -1, 3) if opts.raw_input else (-1,))
    network_input = graph.inputs[0]
    h, w = graph.imgsz
    prepared = Tensor(network_input.name, network_input.dtype, (3, h, w))
    placement = Tensor(PLACEMENT, "float32", (5,))
    found = Tensor(DETECTIONS, "float32", (-1, 6))
    common = {"instances": opts.instances, "kind": "KIND_CPU", "queue_delay_us": opts.max_queue_delay_us}
    pre = model_config(f"{name}_pre", [image], [prepared, placement], graph.max_batch, backend="python", **common,
                       parameters={**env, "input": "raw" if opts.raw_input else "encoded", "imgsz": f"{h},{w}",
                                   "network_input": network_input.name, "dtype": network_input.dtype})
    post = model_config(f"{name}_post", [*graph.outputs, placement], [found], graph.max_batch, backend="python",
                        **common, parameters={**env, "network_outputs": ",".join(t.name for t in graph.outputs),
                                              "layout": graph.layout, "nms": json.dumps(SHIP_NMS)})
    steps = [
        (f"{name}_pre", {"IMAGE": "IMAGE"}, {network_input.name: "images", PLACEMENT: "placement"}),
        (name, {network_input.name: "images"}, {t.name: f"raw_{t.name}" for t in graph.outputs}),
        (f"{name}_post", {**{t.name: f"raw_{t.name}" for t in graph.outputs}, PLACEMENT: "placement"},
         {DETECTIONS: DETECTIONS}),
    ]
    e2e = ensemble_config(f"{name}_e2e", [image], [found], graph.max_batch, steps)
    return {
        f"{name}_pre": (pre, {"1/model.py": STEP.format(cls="Preprocess", what="letterbox").encode()}),
        f"{name}_post": (post, {"1/model.py": STEP.format(cls="Postprocess", what="NMS, boxes").encode()}),
        f"{name}_e2e": (e2e, {}),
    }
