"""``calib``: a float32 ONNX into FP16 or INT8 Q/DQ, proved on a validation set.

INT8 with ``exclude="auto"``: measure the naive graph (everything quantized), then each
candidate group (attention blocks, Detect, first convolution) alone in INT8 and kept out of
it, and choose the fewest groups to keep (``search.choose``). When all of them together do
not reach the budget, the other layers become candidates too, ranked by the same "kept"
measurement on a subset of the validation images, and added while the budget is not met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from attn_deploy import layouts
from attn_deploy.calib.evaluate import Evaluator, Score, calibration_images
from attn_deploy.calib.groups import Group, candidate_groups, compile_patterns, layer_nodes, nodes_matching
from attn_deploy.calib.search import Decision, Sensitivity, choose
from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import LayerRow, find_boundaries
from attn_deploy.files import all_or_nothing, atomic_write, check_writable, to_json
from attn_deploy.onnxfile import read_onnx
from attn_deploy.sidecar import read_sidecar

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CalibOptions:
    """``calib``'s options: ``precision`` int8 or fp16; ``data`` the calibration images (a folder,
    or a data.yaml's train split) and ``images`` how many; ``method`` max or entropy; ``exclude``
    auto (measure), none, or node-name patterns; ``val`` the validation images (default: the
    data.yaml's val split); ``max_map_drop`` the budget (mAP50-95 points, disagreement % without
    labels); ``output`` (default FILE.int8.onnx / FILE.fp16.onnx); ``cache`` a TensorRT
    calibration cache to write too."""

    precision: str = "int8"
    data: str | Path | None = None
    images: int = 64
    method: str = "max"
    exclude: tuple[str, ...] = ("auto",)
    val: str | Path | None = None
    max_map_drop: float = 0.5
    output: str | Path | None = None
    cache: str | Path | None = None
    search_images: int = 100


@dataclass
class CalibResult:
    output: Path
    precision: str
    method: str | None
    calibration: str
    images: int
    val: str
    budget: float
    reference: Score
    counts: dict[str, int]  # images asked for and used: calibration, validation
    final: Score
    damage: float
    naive: Score | None = None
    kept: list[str] = field(default_factory=list)
    sensitivity: list[Sensitivity] = field(default_factory=list)
    widened: list[Sensitivity] = field(default_factory=list)  # other layers, ranked on a subset
    decision: Decision | None = None
    lint_passed: bool = True
    chart: Path | None = None
    cache: Path | None = None

    @property
    def passed(self) -> bool:
        return self.damage <= self.budget and self.lint_passed

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        out = [] if self.damage <= self.budget else [f"damage {self.damage:.2f} > budget {self.budget:g}"]
        return out + ([] if self.lint_passed else ["the output fails lint"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "output": str(self.output), "precision": self.precision, "method": self.method,
            "calibration": {"source": self.calibration, "images": self.images,
                            "images_requested": self.counts["calibration_requested"]},
            "val": self.val, "val_images": self.counts["val"], "val_images_requested": self.counts["val_requested"],
            "budget": self.budget, "damage": self.damage, "reference": self.reference.to_dict(),
            "final": self.final.to_dict(), "naive": self.naive.to_dict() if self.naive else None,
            "excluded_groups": self.kept, "sensitivity": [s.to_dict() for s in self.sensitivity],
            "sensitivity_other_layers": [s.to_dict() for s in self.widened],
            "decision": self.decision.to_dict() if self.decision else None, "lint_passed": self.lint_passed,
            "chart": str(self.chart) if self.chart else None, "cache": str(self.cache) if self.cache else None,
        }


class Trials:
    """Quantize-and-score, remembered per set of kept node groups."""

    def __init__(self, src: Path, images: Any, method: str, ev: Evaluator, ref: Score, progress: Progress) -> None:
        self.src, self.images, self.method, self.ev, self.ref, self.progress = src, images, method, ev, ref, progress
        self.done: dict[tuple[Any, ...], tuple[bytes, Score]] = {}

    def run(self, exclude: list[str] | None = None, only: list[str] | None = None, ev: Evaluator | None = None,
            what: str = "") -> tuple[bytes, Score, float]:
        """The Q/DQ model, its score and its damage against the evaluator's reference."""
        from attn_deploy.calib.int8 import quantize_int8

        ev = ev or self.ev
        key = (tuple(sorted(exclude or [])), tuple(sorted(only or [])), id(ev))
        if key not in self.done:
            self.progress(f"INT8 trial {len(self.done) + 1}: {what}")
            data = quantize_int8(self.src, self.images, self.method, exclude, only)
            self.done[key] = (data, ev.score(data))
        data, score = self.done[key]
        return data, score, score.damage(ev.reference_score)


def calibrate(src_path: str | Path, opts: CalibOptions, progress: Progress = lambda _: None) -> CalibResult:
    """An FP16 or INT8 (Q/DQ) ONNX from the float32 one at ``src_path``, measured on validation
    images against it; written with its sidecar (and chart, cache) whole or not at all, even
    over the budget. The result is truthy when it met the budget and the output passed lint."""
    src = Path(src_path)
    if not src.is_file():
        raise UserError(f"ONNX file not found: {src}")
    if opts.precision not in ("int8", "fp16"):
        raise UserError(f"--precision must be int8 or fp16, not {opts.precision!r}")
    if opts.exclude not in (("auto",), ("none",)):
        compile_patterns(list(opts.exclude))  # refused now, not after the calibration
    val = opts.val or opts.data
    if val is None:
        raise UserError("calib needs images: --data (a folder or a data.yaml) and/or --val", "accuracy is measured, not assumed")
    model = read_onnx(src)
    out = check_writable(Path(opts.output) if opts.output else src.with_name(f"{src.stem}.{opts.precision}.onnx"))
    if out.resolve() == src.resolve():
        raise UserError(f"-o {out} is the input itself: write the {opts.precision} graph elsewhere")
    if opts.cache and opts.precision == "int8":
        check_writable(opts.cache)
    sidecar = read_sidecar(src)
    layout = (sidecar or {}).get("output_layout") or layouts.YOLOV5
    if layout == layouts.NMS or "output0" not in {o.name for o in model.graph.output}:
        raise UserError(f"{src} has no output0 (exported with --nms?)", "calibrate the graph exported without --nms")
    batch, imgsz = _geometry(model)
    progress("reading calibration and validation images")
    images, origin = calibration_images(opts.data or val, imgsz, opts.images)
    ev = Evaluator(val, imgsz, batch, None, layout)
    progress("scoring the float32 model")
    ref = ev.set_reference(src)
    base = dict(output=out, precision=opts.precision, calibration=origin, images=len(images),
                val=str(val), budget=opts.max_map_drop, reference=ref,
                counts={"calibration_requested": opts.images, "val": ev.images, "val_requested": ev.requested})
    if opts.precision == "fp16":
        data, result = _fp16(src, model, images, ev, opts, base)
    else:
        data, result = _int8(src, model, sidecar, images, ev, opts, base, progress)
    return _write(src, data, result, sidecar, opts)


def _fp16(src: Path, model: onnx.ModelProto, images: Any, ev: Evaluator, opts: CalibOptions,
          base: dict[str, Any]) -> tuple[bytes, CalibResult]:
    from attn_deploy.calib.fp16 import convert_fp16

    exclude = _pattern_nodes(model, opts.exclude)
    data = convert_fp16(src, images, exclude)
    score = ev.score(data)
    return data, CalibResult(**base, method=None, final=score, damage=score.damage(base["reference"]),
                             kept=list(opts.exclude) if exclude else [])


def _int8(src: Path, model: onnx.ModelProto, sidecar: dict[str, Any] | None, images: Any, ev: Evaluator,
          opts: CalibOptions, base: dict[str, Any], progress: Progress) -> tuple[bytes, CalibResult]:
    from attn_deploy.calib.int8 import require_ort_for_int8

    require_ort_for_int8()
    trials = Trials(src, images, opts.method, ev, base["reference"], progress)
    naive_data, naive, naive_damage = trials.run(what="everything in INT8")
    result = CalibResult(**base, method=opts.method, final=naive, damage=naive_damage, naive=naive)
    if opts.exclude == ("none",):
        return naive_data, result
    if opts.exclude != ("auto",):
        data, result.final, result.damage = trials.run(exclude=_pattern_nodes(model, opts.exclude), what="patterns")
        result.kept = list(opts.exclude)
        return data, result
    groups = candidate_groups(model, (sidecar or {}).get("layers"))
    attention = {row["index"] for row in (sidecar or {}).get("layers", []) if row.get("attention")}
    result.sensitivity = [_sensitivity(trials, g, g.layer in attention) for g in groups]
    by_name = {g.name: g for g in groups}
    measure = lambda names: trials.run(exclude=_nodes(by_name, names), what=f"keep {', '.join(names)}")[2]  # noqa: E731
    decision = choose(naive_damage, result.sensitivity, opts.max_map_drop, measure)
    if not decision.within:
        decision, result.widened = _widen(src, model, trials, groups, decision, by_name, opts, progress)
    result.decision, result.kept = decision, decision.kept
    data, result.final, result.damage = trials.run(exclude=_nodes(by_name, decision.kept), what="final")
    return data, result


def _sensitivity(trials: Trials, g: Group, attention: bool) -> Sensitivity:
    kept = trials.run(exclude=list(g.nodes), what=f"{g.name} kept out")[2]
    alone = trials.run(only=list(g.nodes), what=f"{g.name} alone in INT8")[2]
    return Sensitivity(g.name, g.layer, g.module, attention, kept, alone)


def _widen(src: Path, model: onnx.ModelProto, trials: Trials, groups: list[Group], decision: Decision,
           by_name: dict[str, Group], opts: CalibOptions, progress: Progress) -> tuple[Decision, list[Sensitivity]]:
    """Every candidate group kept is not enough: rank the other layers by the damage left when
    each is kept too (on a subset of the images), and add them in that order."""
    sub = Evaluator(opts.val or opts.data, trials.ev.batches[0].images.shape[2:], trials.ev.batch, opts.search_images,
                    trials.ev.layout)
    sub.set_reference(src)
    taken = {g.layer for g in groups}
    base = _nodes(by_name, decision.kept)
    others = [Group(f"model.{i}", i, "layer", tuple(n)) for i, n in sorted(layer_nodes(model).items()) if i not in taken]
    by_name.update({g.name: g for g in others})
    table = [Sensitivity(g.name, g.layer, g.module, False, trials.run(exclude=base + list(g.nodes), ev=sub,
                                                                       what=f"{g.name} kept too (subset)")[2])
             for g in others]
    measure = lambda names: trials.run(exclude=_nodes(by_name, names), what=f"keep {len(names)} groups")[2]  # noqa: E731
    wider = choose(decision.damage, table, opts.max_map_drop, measure, start=decision.kept, start_damage=decision.damage)
    wider.trials = decision.trials + wider.trials
    return wider, table


def _nodes(by_name: dict[str, Group], names: list[str]) -> list[str]:
    return [n for name in names for n in by_name[name].nodes]


def _pattern_nodes(model: onnx.ModelProto, exclude: tuple[str, ...]) -> list[str]:
    if exclude in (("auto",), ("none",), ()):
        return []
    nodes = nodes_matching(model, list(exclude))
    if not nodes:
        raise UserError(f"--exclude {' '.join(exclude)} matches no node name (names look like /model.9/cv1/conv/Conv)")
    return nodes


def _geometry(model: onnx.ModelProto) -> tuple[int, tuple[int, int]]:
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or None in dims[2:]:
        raise UserError(f"calib needs an ONNX with a fixed input size (this one has {dims}): export without --dynamic")
    return dims[0] or 1, (int(dims[2]), int(dims[3]))


def _layers(data: bytes, layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layer boundaries found again in the new graph (the tensors before its Q/DQ and
    Casts); a source sidecar without boundaries, or a graph where one is unclear, keeps the
    rows without tensors (``parity --per-block`` then says so)."""
    try:
        rows = [LayerRow.from_dict(d) for d in layers]
        return [b.to_dict() for b in find_boundaries(onnx.load_from_string(data), rows)]
    except (KeyError, TypeError, ValueError):
        return [{k: v for k, v in d.items() if k not in ("output", "inputs")} for d in layers]


def _write(src: Path, data: bytes, result: CalibResult, sidecar: dict[str, Any] | None, opts: CalibOptions) -> CalibResult:
    from attn_deploy.exporter import lint_onnx
    from attn_deploy.files import sha256

    out = result.output
    with all_or_nothing() as written:  # the graph, its chart, cache and sidecar: all, or none left
        written.append(atomic_write(out, data))
        result.lint_passed = lint_onnx(out).passed
        if result.sensitivity:
            from attn_deploy.calib.chart import sensitivity_chart

            result.chart = sensitivity_chart(result, out.with_name(out.stem + ".sensitivity.png"))
            written.append(result.chart)
        if opts.cache and result.precision == "int8":
            from attn_deploy.calib.cache import activation_scales, write_cache

            result.cache = write_cache(activation_scales(onnx.load_from_string(data)), opts.cache)
            written.append(result.cache)
        doc = dict(sidecar or {})
        if doc.get("layers"):
            doc["layers"] = _layers(data, doc["layers"])
        doc["onnx"] = {"file": out.name, "sha256": sha256(data), "bytes": len(data), "from": src.name}
        doc["precision"] = result.to_dict()
        written.append(atomic_write(out.with_suffix(".json"), to_json(doc).encode()))
    return result
