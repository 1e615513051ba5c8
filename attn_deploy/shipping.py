"""``ship``: one call from weights to a checked deployable, every artefact in one folder.

The steps are the verbs' own library functions, in the order a deployment takes them:

- **verify** (with ``fork``): our rebuild of the checkpoint against the user's fork, run on
  it in a separate process, layer by layer (``diagnose/fork.py``); ``verify.json``;
- **export**: ``NAME.onnx`` + ``NAME.json``, linted and checked against PyTorch;
- **calib**: int8, ``NAME.int8.onnx`` (Q/DQ, within the mAP budget); fp16, ``NAME.fp16.onnx``
  (AutoCast); fp32 has nothing to do. FP16 goes through calib rather than a builder flag
  because precision lives in the graph (DESIGN.md): it is then the graph ONNX Runtime checks
  here and the one TensorRT 10+ builds strongly typed (TensorRT 11 has no FP16 flag);
- **build**: ``NAME[.PRECISION].engine`` + ``.engine.json`` where TensorRT is installed;
  without it the checked ONNX is the deployable, said once, up front;
- **parity**: the deployable against PyTorch on the data (agreement and mAP gates);
- **report**: ``report.html`` + ``report.json`` (the steps, calib's accuracy table, the parity
  page), written whenever parity ran, pass or fail: a failing run is when it is needed.

Bad input is refused before anything is written. A failed gate stops the run there (the
steps after it are recorded as not run) and the result is falsy, with exit code 1; bad input
met on the way (calibration images that cannot be read) is recorded, then raised. Each
artefact is written whole with its sidecar; ``ship.json`` records every step, its status and
why, and the artefacts.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attn_deploy import __version__
from attn_deploy.errors import AttnDeployError, UserError
from attn_deploy.files import all_or_nothing, atomic_write, check_writable, to_json
from attn_deploy.targets import check_precision

PRECISIONS = ("int8", "fp16", "fp32")
STEPS = ("verify", "export", "calib", "build", "parity", "report")
SUMMARY = "ship.json"
Say = Callable[[str], None]


@dataclass(frozen=True)
class ShipOptions:
    """What to ship, at which precision, and the gates it must pass.

    The model is ``model`` (a zoo name), ``cfg`` (a yaml) and/or ``weights`` (a checkpoint),
    as for ``load_model``. ``data`` is a folder or a YOLO data.yaml: calibration images (its
    train split) and the images parity checks on (its val split); int8 and fp16 need it.
    ``output`` is the folder (default ``./NAME-ship``); an existing non-empty one is refused
    unless ``force``, which first removes the files a previous ship listed in its ship.json.
    ``max_images`` caps the parity images; ``max_map_drop`` is both calib's budget and
    parity's gate (mAP50-95 points); ``calib_images``, ``method`` and ``exclude`` are calib's.
    ``fork`` (the fork's repository) runs ``verify`` first, with the fork's code, in ``python``.
    """

    model: str | None = None
    cfg: str | Path | None = None
    weights: str | Path | None = None
    data: str | Path | None = None
    precision: str = "fp16"
    imgsz: int | tuple[int, int] = 640
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    end2end: bool = False  # YOLO26: ship the NMS-free one-to-one head, (N, max_det, 6)
    max_det: int = 300
    output: str | Path | None = None
    force: bool = False
    max_images: int | None = None
    min_agreement: float | None = None  # None: by the precision shipped (parity/gates.py)
    agreement_iou: float | None = None
    max_map_drop: float = 0.5
    on_error: str = "skip"
    calib_images: int = 64
    method: str = "max"
    exclude: tuple[str, ...] = ("auto",)
    min_int8: float = 0.8
    qat: int | None = None  # int8: epochs of quantization-aware fine-tuning instead of calibration
    fork: str | Path | None = None
    python: str | None = None
    target: Any = None  # attn_deploy.targets.Target: export, calib and build for that box

    @property
    def size(self) -> tuple[int, int]:
        """``imgsz`` as (H, W)."""
        s = self.imgsz
        if isinstance(s, int) and not isinstance(s, bool):
            return s, s
        pair = isinstance(s, (tuple, list)) and len(s) == 2
        if pair and all(isinstance(v, int) and not isinstance(v, bool) for v in s):
            return int(s[0]), int(s[1])
        raise UserError(f"imgsz must be N or (H, W), not {str(s)[:40]!r}")


@dataclass
class Step:
    """One step of the run: ``status`` is pass, fail, skipped or not run, ``why`` says why."""

    name: str
    status: str = "not run"
    why: str = ""
    artefacts: list[str] = field(default_factory=list)  # file names in the output folder
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "why": self.why, "artefacts": self.artefacts,
                "seconds": round(self.seconds, 1)}


@dataclass
class ShipResult:
    """Truthy when every gate passed. ``failed`` names the step that stopped the run and
    ``exit_code`` is the command's: 0, 1 (a gate failed) or 2 (bad input met on the way).
    The steps' own results (``export``, ``calib``, ``build``, ``parity``) are kept as well."""

    output: Path
    model: str
    precision: str
    tensorrt: str | None
    options: ShipOptions
    steps: list[Step] = field(default_factory=lambda: [Step(n) for n in STEPS])
    candidate: Path | None = None  # what parity judges: the engine, or else the checked ONNX
    failed: str | None = None
    exit_code: int = 0
    export: Any = None
    calib: Any = None
    build: Any = None
    parity: Any = None
    verify: Any = None

    @property
    def passed(self) -> bool:
        return self.failed is None and self.exit_code == 0

    def __bool__(self) -> bool:
        return self.passed

    @property
    def deployable(self) -> Path | None:
        """The candidate once every gate passed; None before, or when one failed."""
        return self.candidate if self.passed else None

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def failures(self) -> list[str]:
        return [f"{s.name}: {s.why}" for s in self.steps if s.status == "fail"]

    def artefacts(self) -> list[str]:
        return [a for s in self.steps for a in s.artefacts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "attn_deploy": __version__, "passed": self.passed, "model": self.model, "precision": self.precision,
            "output": str(self.output), "candidate": self.candidate.name if self.candidate else None,
            "deployable": self.deployable.name if self.deployable else None,
            "tensorrt": self.tensorrt, "failed": self.failed, "exit_code": self.exit_code,
            "steps": [s.to_dict() for s in self.steps], "artefacts": self.artefacts(),
            "options": {**asdict(self.options), "imgsz": list(self.options.size),
                        "target": self.options.target.to_dict() if self.options.target is not None else None},
        }


def ship(opts: ShipOptions, progress: Say | None = None, notice: Say | None = None) -> ShipResult:
    """Export, calibrate, build (where TensorRT is), check parity against PyTorch and write
    the report, into one folder; see the module's docstring for the steps.

    ``progress`` hears what is being done; ``notice`` hears the one line said before the work
    when TensorRT is missing (where the run will stop). Raises ``UserError`` on bad input;
    returns a falsy result, with the failed step and exit code 1, when a gate fails."""
    say = progress or (lambda _msg: None)
    say("checking the inputs")
    net, folder, trt = _prepare(opts)
    result = ShipResult(folder, net.name, opts.precision, trt, opts)
    if trt is None and notice is not None:
        notice(f"TensorRT is not installed: ship stops at the checked ONNX {folder / _onnx_name(net.name, opts)} "
               "(parity by ONNX Runtime)")
    if opts.force:
        _clear_previous(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the output folder {folder}: {e.strerror or e}") from None
    try:
        _pipeline(result, net, say)
    except AttnDeployError:  # bad input met on the way: recorded, then raised
        with contextlib.suppress(AttnDeployError):
            _write_summary(result)
        raise
    _write_summary(result)
    return result


def _pipeline(result: ShipResult, net: Any, say: Say) -> None:
    if _timed(result, "verify", lambda step: _verify(net, result, step, say)) is None:
        return
    onnx = _timed(result, "export", lambda step: _export(net, result, step, say))
    graph = _timed(result, "calib", lambda step: _calib(net, onnx, result, step, say)) if onnx else None
    target = _timed(result, "build", lambda step: _build(graph, result, step, say)) if graph else None
    if target is None:
        return
    result.candidate = target
    _timed(result, "parity", lambda step: _parity(net, target, result, step, say))
    _timed(result, "report", lambda step: _report(net, result, step, say))  # pass or fail: then it is needed


def _timed(result: ShipResult, name: str, work: Callable[[Step], Path | None]) -> Path | None:
    """Run one step; a failed gate returns None (later steps stay 'not run'), bad input is
    recorded and raised."""
    step = result.step(name)
    start = time.perf_counter()
    try:
        out = work(step)
    except AttnDeployError as e:
        step.status, step.why = "fail", str(e)
        result.failed, result.exit_code = name, e.exit_code
        raise
    finally:
        step.seconds = time.perf_counter() - start
    if step.status == "fail":
        result.failed, result.exit_code = name, 1
        return None
    return out


def _judge(step: Step, passed: bool, failures: list[str], ok: str, files: list[Any]) -> None:
    step.status, step.why = ("pass", ok) if passed else ("fail", "; ".join(failures))
    step.artefacts = [Path(f).name for f in files if f]


def _verify(net: Any, result: ShipResult, step: Step, say: Say) -> Path:
    opts = result.options
    if opts.fork is None:
        step.status, step.why = "skipped", "no --fork: the rebuild was not run against the fork's code"
        return result.output
    from attn_deploy.diagnose.fork import verify_fork, verify_images

    say("running the fork's code on the checkpoint, and our rebuild")
    r = verify_fork(net, opts.weights, opts.fork, verify_images(opts.data, opts.size, 2), opts.python)
    result.verify = r
    out = atomic_write(result.output / "verify.json", to_json(r.to_dict()).encode())
    _judge(step, r.passed, r.failures(), f"{r.compared} layers and the output equal the fork's "
           f"(boxes {r.boxes.max_abs:.2g} px, scores {r.scores.max_abs:.2g})", [out])
    return out


def _export(net: Any, result: ShipResult, step: Step, say: Say) -> Path:
    from attn_deploy.exporter import ExportSpec, export_model
    from attn_deploy.exporter.blockcheck import block_files
    from attn_deploy.exporter.export import target_opset
    from attn_deploy.sidecar import model_source

    opts = result.options
    spec = ExportSpec(opts.size, opts.batch, opts.dynamic,
                      target_opset(opts.target, None) if opts.target is not None else opts.opset)
    source = model_source(opts.model, opts.cfg, opts.weights, block_files(net))
    r = export_model(net, result.output / f"{net.name}.onnx", spec, source=source, progress=say, target=opts.target)
    result.export = r
    _judge(step, r.passed, r.failures(), "linted for TensorRT; ONNX Runtime matches PyTorch" + _target_words(r),
           [r.onnx, r.sidecar])
    return Path(r.onnx)


def _target_words(r: Any) -> str:
    """What the export for a target did and where it runs: '; for orin-jp6 (TensorRT 10.3): 3
    rewrites; DLA 99.9% of MACs, 6 copies'."""
    t = r.extra.get("target")
    if not t:
        return ""
    words = f"; for {t['name']} (TensorRT {t['tensorrt']}): {len(t['rewrites'])} rewrite(s)"
    d = t.get("dla_placement")
    if d:
        words += (f"; DLA: none ({d['refused']})" if d["refused"] else
                  f"; DLA {d['dla_mac_share']:.1%} of MACs, {d['on_dla']}/{d['nodes']} nodes, {d['switches']} copies")
    return words


def _calib(net: Any, onnx: Path, result: ShipResult, step: Step, say: Say) -> Path:
    opts = result.options
    if opts.precision == "fp32":
        step.status, step.why = "skipped", "fp32: the exported graph is the one to ship"
        return onnx
    from attn_deploy.calib.calibrate import CalibOptions, calibrate

    out = result.output / _onnx_name(result.model, opts)
    if opts.qat is not None:  # INT8 by quantization-aware fine-tuning, scored as calib scores
        from attn_deploy.qat import QatOptions, run_qat

        q = QatOptions(data=opts.data, epochs=opts.qat, calib_images=opts.calib_images,
                       max_map_drop=opts.max_map_drop, min_int8=opts.min_int8, output=out)
        r = run_qat(q, progress=say, net=net, reference=onnx)
    else:
        c = CalibOptions(opts.precision, opts.data, opts.calib_images, opts.method, opts.exclude, None,
                         opts.max_map_drop, out, min_int8=opts.min_int8)
        r = calibrate(onnx, c, progress=say)
    result.calib = r
    unit = "mAP50-95 points" if r.reference.map50_95 is not None else "disagreement %"
    kept = f"; kept out of INT8: {', '.join(r.kept)}" if r.kept and opts.precision == "int8" else ""
    share = f"; {r.coverage.share:.1%} of MACs in INT8" if r.coverage is not None else ""
    _judge(step, r.passed, r.failures(), f"damage {r.damage:.2f} <= {r.budget:g} {unit}{share}{kept}",
           [f for f in (r.output, r.output.with_suffix(".json"), r.chart, r.cache, r.checkpoint) if f and Path(f).exists()])
    return r.output


def _build(src: Path, result: ShipResult, step: Step, say: Say) -> Path:
    if result.tensorrt is None:
        step.status, step.why = "skipped", f"TensorRT is not installed: {src.name} is the deployable"
        return src
    from attn_deploy.engines.build import BuildOptions, build_engine

    say(f"building the TensorRT engine from {src.name}")
    r = build_engine(src, src.with_suffix(".engine"), BuildOptions(result.options.precision, target=result.options.target))
    result.build = r
    plan = r.sidecar["plan"]["note"] or result.options.precision
    step.status, step.why = "pass", f"TensorRT {r.sidecar['tensorrt']}; {plan}"
    step.artefacts = [r.engine.name, f"{r.engine.name}.json"]
    return r.engine


def _parity(net: Any, target: Path, result: ShipResult, step: Step, say: Say) -> None:
    from attn_deploy.engines import runner_for
    from attn_deploy.parity.check import ParityOptions, check_parity
    from attn_deploy.parity.gates import gates_for

    opts = result.options
    gates = gates_for(target, opts.min_agreement, opts.agreement_iou, opts.max_map_drop)
    po = ParityOptions(opts.data, opts.size, opts.max_images, opts.on_error, gates, examples=6)
    r = check_parity(net, runner_for(target), target.name, po,
                     progress=lambda n, total: say(f"parity: {n}/{total} images"))
    result.parity = r
    d = r.detections.agreement
    drop = r.map_drop
    ok = f"agreement {d:.4f} >= {gates.min_agreement:g}" + (
        f", mAP50-95 drop {drop:.2f} <= {opts.max_map_drop:g}" if drop is not None else ", no labels: mAP not gated")
    _judge(step, r.passed, r.failures(), ok, [])
    if r.skipped:
        step.why += f" ({r.images} of {r.requested} images: {len(r.skipped)} unreadable)"


def _report(net: Any, result: ShipResult, step: Step, say: Say) -> None:
    from attn_deploy.htmlreport import write_report

    say("writing the report")
    calib = "calib's accuracy table, " if result.calib else ""
    step.status, step.why = "pass", f"the steps, {calib}the parity page"  # as the page shows it
    step.artefacts = ["report.html", "report.json"]
    doc = {"ship": result.to_dict(), "calib": result.calib.to_dict() if result.calib else None,
           "parity": result.parity.to_dict()}
    try:
        with all_or_nothing() as written:
            written.append(result.output / "report.json")  # removed again when the page cannot be written
            write_report(result.output, _page(result, net), doc)
    except OSError as e:
        raise UserError(f"cannot write the report in {result.output}: {e.strerror or e}") from None


def _page(result: ShipResult, net: Any) -> Any:
    from attn_deploy.htmlreport.page import Section, from_rich
    from attn_deploy.htmlreport.pages import calib_page, parity_page

    page = parity_page(result.parity, list(net.names))
    page.title = f"ship: {result.model} ({result.precision}) -> {result.candidate.name if result.candidate else ''}"
    text = "Every artefact lies beside this page with its sidecar; ship.json holds the same summary."
    page.sections.insert(0, Section("Steps", text, [from_rich(steps_table(result))]))
    if result.calib is not None:
        page.sections[1:1] = calib_page(result.calib).sections
    return page


def steps_table(result: ShipResult) -> Any:
    """The run as a terminal table (rich): one row per step, then the verdict."""
    from rich.markup import escape
    from rich.table import Table

    shown = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "skipped": "[yellow]skipped[/]",
             "not run": "[dim]not run[/]"}
    t = Table(title=escape(f"ship {result.model} ({result.precision}) -> {result.output}"))
    for col in ("step", "result", "why", "artefacts"):
        t.add_column(col, overflow="fold", no_wrap=col in ("step", "result"))
    for s in result.steps:
        t.add_row(s.name, shown.get(s.status, s.status), escape(s.why), escape(", ".join(s.artefacts)))
    if result.passed:
        name = result.deployable.name if result.deployable else ""
        t.add_row("verdict", "[green]PASS[/]", escape(f"deployable: {name}"), "")
    else:
        t.add_row("verdict", "[red]FAIL[/]", escape(f"stopped at {result.failed} (exit {result.exit_code})"), "")
    return t


def _onnx_name(name: str, opts: ShipOptions) -> str:
    return f"{name}.onnx" if opts.precision == "fp32" else f"{name}.{opts.precision}.onnx"


def _prepare(opts: ShipOptions) -> tuple[Any, Path, str | None]:
    """Everything that can be refused before any work: options, model, folder, images."""
    from attn_deploy.engines.trt import tensorrt_version
    from attn_deploy.models import check_imgsz, load_model

    _check_options(opts)
    if opts.output is not None:
        _check_folder(Path(opts.output), opts.force)
    from attn_deploy.models.heads import set_end2end

    net = set_end2end(load_model(opts.model, opts.cfg, opts.weights), opts.max_det if opts.end2end else None)
    check_imgsz(opts.size, int(net.stride.max()))
    folder = _check_folder(Path(opts.output) if opts.output is not None else Path(f"{net.name}-ship"), opts.force)
    if opts.data is not None:
        _check_data(opts)
    return net, folder, tensorrt_version()


def _check_options(opts: ShipOptions) -> None:
    from attn_deploy.exporter import ExportSpec

    if opts.precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {opts.precision!r}")
    if opts.target is not None:
        check_precision(opts.target, opts.precision)
    ExportSpec(opts.size, opts.batch, opts.dynamic, opts.opset).check()
    if opts.precision != "fp32" and opts.data is None:
        raise UserError(f"--precision {opts.precision} needs --data",
                        "calibration images, and the images parity checks on")
    if opts.precision != "fp32" and opts.dynamic:
        raise UserError(f"--precision {opts.precision} needs a fixed input size (calib measures a static graph)",
                        "drop --dynamic, or ship fp32")
    if any(v is not None and not 0 <= v <= 1 for v in (opts.min_agreement, opts.agreement_iou)) or opts.max_map_drop < 0:
        raise UserError("min_agreement and agreement_iou must lie in [0, 1] and max_map_drop be at least 0")
    if opts.calib_images < 1 or (opts.max_images is not None and opts.max_images < 1):
        raise UserError("calib_images and max_images must be at least 1")
    if len(opts.exclude) > 1 and ("auto" in opts.exclude or "none" in opts.exclude):
        raise UserError("--exclude auto and none stand alone")
    if opts.qat is not None and (opts.precision != "int8" or opts.data is None
                                 or Path(opts.data).suffix.lower() not in (".yaml", ".yml")):
        raise UserError("--qat fine-tunes an INT8 model: it needs --precision int8 and --data DATA.yaml (train and val)")
    if opts.fork is not None and (opts.weights is None or not Path(opts.fork).is_dir()):
        raise UserError(f"--fork {opts.fork}: " + ("not a folder" if opts.weights else "needs --weights, the checkpoint it trained"))
    if opts.exclude not in (("auto",), ("none",)):
        from attn_deploy.calib.groups import compile_patterns

        compile_patterns(list(opts.exclude))  # a broken pattern is refused now, not after the export


def _check_folder(folder: Path, force: bool) -> Path:
    """The output folder: refused when it is a file, not empty (without ``force``), or cannot
    be made or written."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write into {folder}: it exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise UserError(f"output folder {folder} is not empty",
                        "choose another with -o, or pass --force to write into it")
    base = folder
    while not base.exists() and base != base.parent:  # where mkdir will start
        base = base.parent
    if not base.is_dir():
        raise UserError(f"cannot make the output folder {folder}: {base} is a file")
    check_writable(base / SUMMARY)
    return folder


def _check_data(opts: ShipOptions) -> None:
    """The images parity will read exist and at least one of them is usable."""
    from attn_deploy.data import ImageLoader, load_data

    loader = ImageLoader(load_data(opts.data), opts.size, 1, opts.on_error, opts.max_images)
    next(iter(loader), None)  # a user error when none can be used


def _clear_previous(folder: Path) -> None:
    """With ``force``: remove what a previous ship listed in its ship.json (and nothing else),
    so no stale engine or report lies beside this run's files."""
    try:
        names = json.loads((folder / SUMMARY).read_text()).get("artefacts", [])
    except (OSError, ValueError, AttributeError):
        return
    for name in [*names, SUMMARY]:
        p = folder / str(name)
        if Path(str(name)).name == name and p.is_file() and not p.is_symlink():
            p.unlink()


def _write_summary(result: ShipResult) -> None:
    if result.output.is_dir():
        atomic_write(result.output / SUMMARY, to_json(result.to_dict()).encode())
