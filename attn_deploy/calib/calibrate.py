"""``calib``: a float32 ONNX into FP16 or INT8 Q/DQ, proved on a validation set.

INT8 is calibrated once (Model Optimizer, everything quantized: the naive graph). With
``exclude="auto"`` (the ranked search), per-block parity of the naive graph against the float32
one ranks every yaml layer by the error it adds (``rank.py``); sets of the most sensitive
layers are kept out of INT8 by editing the naive graph (``surgery.py``: its Q/DQ pairs go, no
new calibration), scored on a subset of the validation images, and the shortest such set
within the budget is chosen (``search.shortest_prefix``). The chosen graph is then scored on
the whole validation set, and that score is what the result reports and gates on.

``search="measured"`` is the earlier search, kept as the reference it is benchmarked against:
every candidate group (attention blocks, Detect, first convolution) calibrated anew alone in
INT8 and kept out of it, then, when those are not enough, every other layer ranked by such a
trial on a subset.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import onnx

from attn_deploy import layouts
from attn_deploy.calib.coverage import coverage, macs_out
from attn_deploy.calib.evaluate import Evaluator, Score, calibration_images
from attn_deploy.calib.groups import Group, candidate_groups, compile_patterns, layer_nodes, nodes_matching
from attn_deploy.calib.result import CalibOptions, CalibResult, Progress, Stages, write_result
from attn_deploy.calib.search import Decision, Sensitivity, choose, fewest_macs_out, prune, shortest_prefix
from attn_deploy.calib.surgery import keep_out
from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import LayerRow
from attn_deploy.files import check_writable
from attn_deploy.onnxfile import node_macs, read_onnx
from attn_deploy.sidecar import read_sidecar

PRUNE_TRIALS = 4  # trials the ranked search may spend dropping kept layers the budget does not need
TRIAL_SCORINGS = 6  # images the ranked search's trials may score, in whole val sets (the search for a
                    # first set within the budget is never cut short)


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
    if opts.search not in ("ranked", "measured"):
        raise UserError(f"search {opts.search!r}: ranked or measured")
    batch, imgsz = _geometry(model)
    stages = Stages(progress)
    with stages("images", "reading calibration and validation images"):
        images, origin = calibration_images(opts.data or val, imgsz, opts.images)
        ev = Evaluator(val, imgsz, batch, None, layout)
    with stages("reference", f"scoring the float32 model on {ev.images} images"):
        ref = ev.set_reference(src)
    if not any(len(d) for d in ev.reference) or ref.map50_95 == 0:  # a gate never passes on nothing
        what = "detects nothing" if not any(len(d) for d in ev.reference) else "scores mAP50-95 0"
        raise UserError(f"the float32 {src.name} {what} on the {ev.images} validation images of {val}: "
                        "there is no accuracy to keep", "calibrate a trained model, on images like those it will see")
    base = {"output": out, "precision": opts.precision, "calibration": origin, "images": len(images),
            "val": str(val), "budget": opts.max_map_drop, "reference": ref,
            "counts": {"calibration_requested": opts.images, "val": ev.images, "val_requested": ev.requested}}
    if opts.precision == "fp16":
        data, result = _fp16(src, model, images, ev, opts, base)
    else:
        data, result = _int8(src, model, sidecar, images, ev, opts, base, progress, stages)
    result.stages = {**stages.seconds, "total": stages.elapsed()}  # writing takes milliseconds
    return write_result(src, data, result, sidecar, opts.cache)


def _fp16(src: Path, model: onnx.ModelProto, images: Any, ev: Evaluator, opts: CalibOptions,
          base: dict[str, Any]) -> tuple[bytes, CalibResult]:
    from attn_deploy.calib.fp16 import convert_fp16

    exclude = _pattern_nodes(model, opts.exclude)
    data = convert_fp16(src, images, exclude)
    score = ev.score(data)
    return data, CalibResult(**base, method=None, final=score, damage=score.damage(base["reference"]),
                             kept=list(opts.exclude) if exclude else [])


def _int8(src: Path, model: onnx.ModelProto, sidecar: dict[str, Any] | None, images: Any, ev: Evaluator,
          opts: CalibOptions, base: dict[str, Any], progress: Progress, stages: Stages) -> tuple[bytes, CalibResult]:
    from attn_deploy.calib.int8 import require_ort_for_int8

    require_ort_for_int8()
    if not 0 <= opts.min_int8 <= 1:
        raise UserError(f"--min-int8 {opts.min_int8:g}: a share of the MACs, from 0 to 1")
    macs = node_macs(model)
    data, result = _int8_graph(src, model, sidecar, images, ev, opts, base, progress, stages, macs)
    result.coverage, result.min_int8 = coverage(onnx.load_from_string(data), macs), opts.min_int8
    return data, result


def _int8_graph(src: Path, model: onnx.ModelProto, sidecar: dict[str, Any] | None, images: Any, ev: Evaluator,
                opts: CalibOptions, base: dict[str, Any], progress: Progress, stages: Stages,
                macs: dict[str, int]) -> tuple[bytes, CalibResult]:
    from attn_deploy.calib.int8 import quantize_int8

    layers = (sidecar or {}).get("layers") or []
    if opts.method == "best" and (not layers or opts.search == "measured"):
        raise UserError(f"--method best chooses per layer: it needs {src.name}'s export sidecar (its layer table) and "
                        "the ranked search", "re-export the model with attn-deploy export, or use --method max")
    if opts.exclude == ("auto",) and (opts.search == "measured" or not layers):
        return _measured(src, model, sidecar, images, ev, opts, base, progress)
    entropy_layers = None
    if opts.method == "best":
        from attn_deploy.calib.scales import best_scales

        with stages("calibration", f"calibrating INT8 twice (max, entropy) on {len(images)} images; each layer's "
                                   "scales from the one its local error prefers"):
            naive_data, entropy_layers = best_scales(src, model, images, [LayerRow.from_dict(d) for d in layers],
                                                     ev.layout, opts.rank_images)
    else:
        with stages("calibration", f"calibrating INT8 on {len(images)} images (Model Optimizer, {opts.method})"):
            naive_data = quantize_int8(src, images, opts.method)
    with stages("naive", f"scoring everything-in-INT8 on {ev.images} images"):
        naive = ev.score(naive_data)
    naive_damage = naive.damage(base["reference"])
    result = CalibResult(**base, method=opts.method, final=naive, damage=naive_damage, naive=naive,
                         search="ranked" if opts.exclude == ("auto",) else None, entropy_layers=entropy_layers)
    if opts.exclude == ("none",) or (opts.exclude == ("auto",) and naive_damage <= opts.max_map_drop):
        return naive_data, result
    naive_model = onnx.load_from_string(naive_data)
    if opts.exclude != ("auto",):
        data = keep_out(naive_model, _pattern_nodes(model, opts.exclude)).SerializeToString()
        with stages("final", f"scoring the graph on {ev.images} images"):
            result.final = ev.score(data)
        result.damage, result.kept = result.final.damage(base["reference"]), list(opts.exclude)
        return data, result
    return _ranked(model, naive_model, naive_data, layers, images, ev, opts, result, stages, macs)


class SubsetTrials:
    """The ranked search's trials: graphs made by surgery on the naive graph (``by_name``: each
    ranking entry's nodes), scored on a subset of the val images, paired with the float32 model's
    detections on the same images; a subset that cannot tell (the budget within two standard
    errors of the damage) grows to twice its images. Trials are bounded by counts, never the
    clock: at most ``most`` decisions, refining while the images scored stay within
    TRIAL_SCORINGS whole val sets, so that the same command on the same files makes the same graph."""

    def __init__(self, naive: onnx.ModelProto, by_name: dict[str, list[str]], ev: Evaluator, first: int,
                 budget: float, most: int, stages: Stages) -> None:
        self.naive, self.by_name, self.ev, self.budget, self.most, self.stages = naive, by_name, ev, budget, most, stages
        self.sub = ev.first(first) if first < ev.images else ev
        self.graphs: dict[tuple[str, ...], bytes] = {}
        self.scores: dict[tuple[int, tuple[str, ...]], Score] = {}
        self.log: list[float] = []
        self.spent, self.allowance = 0, TRIAL_SCORINGS * ev.images

    def graph(self, kept: list[str]) -> bytes:
        key = tuple(kept)
        if key not in self.graphs:
            self.graphs[key] = keep_out(self.naive, [n for g in kept for n in self.by_name[g]]).SerializeToString()
        return self.graphs[key]

    def score(self, e: Evaluator, kept: list[str]) -> Score:
        key = (id(e), tuple(kept))
        if key not in self.scores:
            self.scores[key] = e.score(self.graph(kept))
            self.spent += e.images
        return self.scores[key]

    def measure(self, kept: list[str]) -> float:
        """The damage of keeping ``kept`` out of INT8, on a subset that can tell."""
        while True:
            with self.stages("trials", f"trial {len(self.log) + 1} (of at most {self.most}): {len(kept)} layer(s) "
                                       f"kept out of INT8, scored on {self.sub.images} images"):
                s = self.score(self.sub, kept)
            d, error = s.damage(self.sub.reference_score), s.damage_error(self.sub.reference_score)
            bigger = min(self.ev.images, 2 * self.sub.images)
            if abs(d - self.budget) > 2 * error or bigger == self.sub.images or self.spent + bigger > self.allowance:
                break
            self.sub = self.ev.first(bigger)
        self.log.append(d)
        return d

    def more(self) -> bool:
        return len(self.log) < self.most and self.spent < self.allowance


def _ranked(model: onnx.ModelProto, naive_model: onnx.ModelProto, naive_data: bytes, layers: list[dict[str, Any]],
            images: Any, ev: Evaluator, opts: CalibOptions, result: CalibResult,
            stages: Stages, macs: dict[str, int]) -> tuple[bytes, CalibResult]:
    """Rank every layer by per-block parity of the naive graph, keep the shortest prefix of that
    order whose subset score is within the budget (then the set with the fewest MACs out), and
    score it on all validation images."""
    from attn_deploy.calib.rank import local_errors, ranking

    rows = [LayerRow.from_dict(d) for d in layers]
    with stages("ranking", f"ranking {len(rows)} layers by their INT8 error (per-block parity, "
                           f"{min(opts.rank_images, len(images))} images)"):
        try:
            errors = local_errors(model, naive_data, rows, images[: opts.rank_images], ev.layout)
            result.ranking = ranking(errors, ev.layout)
        except ValueError as e:  # the sidecar's layer table does not fit this graph
            raise UserError(f"{result.output.name}: the layers of the export sidecar are not in this graph ({e})"[:200],
                            "re-export the model, or choose with --exclude none / --exclude PATTERN") from None
    nodes = layer_nodes(model)
    by_name = {e.name: e.nodes(nodes.get(e.layer, [])) for e in result.ranking}
    order = [e.name for e in result.ranking if by_name[e.name]]
    first = opts.search_images if opts.search_images is not None else min(100, (ev.images + 1) // 2)
    most = 2 * math.ceil(math.log2(max(len(order), 2))) + 1 + PRUNE_TRIALS  # doubling, halving, pruning
    trials = SubsetTrials(naive_model, by_name, ev, first, opts.max_map_drop, most, stages)
    decision = prune(shortest_prefix(order, opts.max_map_drop, trials.measure, trials.more), opts.max_map_drop,
                     trials.measure, trials.more)
    decision = fewest_macs_out(decision, opts.max_map_drop,
                               lambda kept: macs_out(macs, [n for g in kept for n in by_name[g]]))
    found = decision.within  # on the subset
    result.search_images = trials.sub.images
    for attempt in range(4):  # the chosen graph on all images; where the subset was optimistic, a longer prefix
        data = trials.graph(decision.kept)
        with stages("final", f"scoring the chosen graph ({len(decision.kept)} layer(s) kept) on {ev.images} images"):
            final = trials.score(ev, decision.kept)
        damage, k = final.damage(ev.reference_score), len(decision.kept)
        if damage <= opts.max_map_drop or not found or k >= len(order) or attempt == 3:
            break
        decision = Decision(order[: min(len(order), k + max(1, k // 2))], damage, False, decision.trials)
    result.trials = len(trials.scores)
    decision.damage, decision.within = damage, damage <= opts.max_map_drop
    result.decision, result.kept = decision, decision.kept
    result.final, result.damage = final, damage
    return data, result


def _measured(src: Path, model: onnx.ModelProto, sidecar: dict[str, Any] | None, images: Any, ev: Evaluator,
              opts: CalibOptions, base: dict[str, Any], progress: Progress) -> tuple[bytes, CalibResult]:
    """The earlier search: every trial a new calibration (``search="measured"``)."""
    trials = Trials(src, images, opts.method, ev, base["reference"], progress)
    _, naive, naive_damage = trials.run(what="everything in INT8")
    result = CalibResult(**base, method=opts.method, final=naive, damage=naive_damage, naive=naive, search="measured")
    groups = candidate_groups(model, (sidecar or {}).get("layers"))
    attention = {row["index"] for row in (sidecar or {}).get("layers", []) if row.get("attention")}
    result.sensitivity = [_sensitivity(trials, g, g.layer in attention) for g in groups]
    by_name = {g.name: g for g in groups}
    measure = lambda names: trials.run(exclude=_nodes(by_name, names), what=f"keep {', '.join(names)}")[2]
    decision = choose(naive_damage, result.sensitivity, opts.max_map_drop, measure)
    if not decision.within:
        decision, result.widened = _widen(src, model, trials, groups, decision, by_name, opts, progress)
    result.decision, result.kept = decision, decision.kept
    data, result.final, result.damage = trials.run(exclude=_nodes(by_name, decision.kept), what="final")
    result.trials = len(trials.done) - 1
    return data, result


def _sensitivity(trials: Trials, g: Group, attention: bool) -> Sensitivity:
    kept = trials.run(exclude=list(g.nodes), what=f"{g.name} kept out")[2]
    alone = trials.run(only=list(g.nodes), what=f"{g.name} alone in INT8")[2]
    return Sensitivity(g.name, g.layer, g.module, attention, kept, alone)


def _widen(src: Path, model: onnx.ModelProto, trials: Trials, groups: list[Group], decision: Decision,
           by_name: dict[str, Group], opts: CalibOptions, progress: Progress) -> tuple[Decision, list[Sensitivity]]:
    """Every candidate group kept is not enough: rank the other layers by the damage left when
    each is kept too (on a subset of the images), and add them in that order."""
    sub = Evaluator(opts.val or opts.data, trials.ev.batches[0].images.shape[2:], trials.ev.batch,
                    opts.search_images or 100, trials.ev.layout)
    sub.set_reference(src)
    taken = {g.layer for g in groups}
    base = _nodes(by_name, decision.kept)
    others = [Group(f"model.{i}", i, "layer", tuple(n)) for i, n in sorted(layer_nodes(model).items()) if i not in taken]
    by_name.update({g.name: g for g in others})
    table = [Sensitivity(g.name, g.layer, g.module, False, trials.run(exclude=base + list(g.nodes), ev=sub,
                                                                       what=f"{g.name} kept too (subset)")[2])
             for g in others]
    measure = lambda names: trials.run(exclude=_nodes(by_name, names), what=f"keep {len(names)} groups")[2]
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
