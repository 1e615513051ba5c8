"""``qat`` (and ``calib --qat``, ``ship --qat``): INT8 by quantization-aware fine-tuning, scored
as calib scores a graph.

Where post-training quantization cannot meet the budget without keeping so much out of INT8
that the graph is INT8 in name only, the weights can learn the rounding instead: the model is
folded and fake-quantized (NVIDIA Model Optimizer), calibrated, and fine-tuned briefly on the
train split (``train/qat.py``), its best epoch kept as train images held out of it judge; the
result is exported through the exporter (standard ops, Q/DQ on every convolution but the
head's outputs, lint) and scored against the float32 graph of the model it came
from on the val split, with calib's evaluator: the same damage, budget, coverage and floor.
Written: the float32 ``NAME.onnx`` (the reference, with its sidecar), ``NAME.qat.int8.onnx``
with its sidecar, and ``NAME.qat.pt``, our checkpoint of the quantized model (it loads like any
other: ``--weights NAME.qat.pt`` exports the same graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attn_deploy.errors import UserError
from attn_deploy.files import check_writable

Progress = Callable[[str], None]


@dataclass(frozen=True)
class QatOptions:
    """The model (``model``/``cfg``/``weights`` as for ``load_model``), ``data`` (a data.yaml:
    its train split fine-tunes and calibrates, its val split scores), the fine-tune's
    ``epochs`` and ``lr``, the input size, the budget and the coverage floor, and the output
    graph (default ``NAME.qat.int8.onnx``)."""

    model: str | None = None
    cfg: str | Path | None = None
    weights: str | Path | None = None
    data: str | Path | None = None
    epochs: int = 2
    lr: float = 1e-3
    imgsz: int = 640
    calib_images: int = 64
    max_map_drop: float = 0.5
    min_int8: float = 0.8
    output: str | Path | None = None


def run_qat(opts: QatOptions, progress: Progress = lambda _: None, net: Any = None,
            reference: Path | None = None) -> Any:
    """Fine-tune, export, score and write (see the module's text); returns calib's ``CalibResult``,
    truthy when within the budget and INT8 enough. ``net``: the model, when the caller has it;
    ``reference``: its float32 export, when there is one (``calib``, ``ship``), else one is made."""
    import onnx

    from attn_deploy.calib.coverage import coverage
    from attn_deploy.calib.evaluate import Evaluator, calibration_images
    from attn_deploy.calib.result import CalibResult, Stages, write_result
    from attn_deploy.exporter import ExportSpec
    from attn_deploy.exporter.blockcheck import block_files
    from attn_deploy.exporter.torch2onnx import clean, onnx_metadata, torch_to_onnx
    from attn_deploy.models import load_model
    from attn_deploy.models.quantized import is_quantized
    from attn_deploy.onnxfile import node_macs
    from attn_deploy.sidecar import model_source, read_sidecar
    from attn_deploy.train.qat import QatRecipe, fine_tune

    _check(opts)
    net = net or load_model(opts.model, opts.cfg, opts.weights)
    if is_quantized(net):
        raise UserError(f"{net.name} is already quantized (a qat checkpoint): fine-tune the float model it came from")
    out = check_writable(Path(opts.output) if opts.output else Path(f"{net.name}.qat.int8.onnx"))
    stem = out.name.removesuffix(".onnx").removesuffix(".int8").removesuffix(".qat")
    stages = Stages(progress)
    source = model_source(opts.model, opts.cfg, opts.weights, block_files(net))
    src = Path(reference) if reference is not None else _float_reference(net, out, stem, opts.imgsz, stages, source)
    side = read_sidecar(src) or {}
    spec = ExportSpec(tuple(int(d) for d in side.get("imgsz") or (opts.imgsz, opts.imgsz)), 1)
    with stages("images", "reading calibration and validation images"):
        images, origin = calibration_images(opts.data, spec.imgsz, opts.calib_images)
        ev = Evaluator(opts.data, spec.imgsz, 1, None, side.get("output_layout") or "xywh_obj_cls")
    with stages("reference", f"scoring the float32 model on {ev.images} images"):
        float32 = ev.set_reference(src)
    if not float32.map50_95:
        raise UserError(f"the float32 {src.name} scores no mAP50-95 on {opts.data}'s val split: no accuracy to keep")
    held, judge = _held_out_judge(opts, spec, src, ev.layout, stages)
    recipe = QatRecipe(epochs=opts.epochs, lr=opts.lr, imgsz=spec.imgsz[0], holdout=held)
    with stages("fine-tune", f"quantization-aware fine-tuning, {opts.epochs} epoch(s) on {opts.data}'s train split"):
        quantized, selection = fine_tune(net, Path(opts.data), images, recipe, log=progress, judge=judge)
    with stages("qdq", "exporting the quantized model to Q/DQ"):
        graph = clean(torch_to_onnx(quantized, spec), net.name, onnx_metadata(net, spec))
        data = graph.SerializeToString()
    with stages("final", f"scoring the Q/DQ graph on {ev.images} images"):
        final = ev.score(data)
    result = CalibResult(
        output=out, precision="int8", method="qat", calibration=origin, images=len(images), val=str(opts.data),
        budget=opts.max_map_drop, reference=float32,
        counts={"calibration_requested": opts.calib_images, "val": ev.images, "val_requested": ev.requested},
        final=final, damage=final.damage(float32), coverage=coverage(graph, node_macs(onnx.load(str(src)))),
        min_int8=opts.min_int8, kept=_kept_in_float(net))
    result.stages = {**stages.seconds, "total": stages.elapsed()}
    result.selection = selection.to_dict() if selection is not None else None
    write_result(src, data, result, side or None)
    if result.int8_enough:
        result.checkpoint = _save(quantized, out.with_name(f"{stem}.qat.pt"), recipe)
    return result


def _kept_in_float(net: Any) -> list[str]:
    """What QAT leaves in float, named as the ranked search names it: the Detect's outputs."""
    from attn_deploy.models.quantized import head_outputs

    return sorted({f"{'.'.join(n.split('.')[:2])} Detect outputs" for n in head_outputs(net)})


def _held_out_judge(opts: QatOptions, spec: Any, src: Path, layout: str, stages: Any) -> tuple[int, Any]:
    """The held-out image count and the judge of an epoch (its Q/DQ damage on them against the
    float32 graph ``src``), or (0, None) where nothing is held out."""
    from attn_deploy.calib.evaluate import Evaluator
    from attn_deploy.exporter.torch2onnx import torch_to_onnx

    held = held_out(opts.data, opts.epochs)
    if not held:
        return 0, None
    with stages("reference", f"scoring the float32 model on {held} held-out train images"):
        sel = Evaluator(opts.data, spec.imgsz, 1, held, layout, split="train")
        sel.set_reference(src)
    return held, lambda m: sel.score(torch_to_onnx(m, spec)).damage(sel.reference_score)


HOLD_OUT_MOST, HOLD_OUT_LEAST = 200, 8


def held_out(data: str | Path, epochs: int) -> int:
    """How many of the train split's first images the fine-tune leaves out to choose its epoch
    on: a fifth, at most 200; none for one epoch or fewer than 40 train images (the last
    epoch's weights are kept)."""
    from attn_deploy.data.source import load_data

    count = min(HOLD_OUT_MOST, len(load_data(data, "train")) // 5)
    return count if epochs > 1 and count >= HOLD_OUT_LEAST else 0


def _check(opts: QatOptions) -> None:
    if opts.data is None or Path(opts.data).suffix.lower() not in (".yaml", ".yml"):
        raise UserError("qat needs --data DATA.yaml: its train split to fine-tune on, its val split to score on")
    if opts.epochs < 1 or not 0 < opts.lr < 1 or not 0 <= opts.min_int8 <= 1 or opts.max_map_drop < 0:
        raise UserError("qat: --epochs at least 1, --lr in (0, 1), --min-int8 in [0, 1], --max-map-drop at least 0")


def _float_reference(net: Any, out: Path, stem: str, imgsz: int, stages: Any, source: dict[str, str]) -> Path:
    """The float32 export beside the output, checked: what the quantized graph is scored against.
    Its sidecar names where the model came from, as ``export``'s does, so that ``calib --qat``
    on it finds the model again (it named the model's name alone, which no loader knows)."""
    from attn_deploy.exporter import ExportSpec, export_model

    src = check_writable(out.with_name(f"{stem}.onnx" if f"{stem}.onnx" != out.name else f"{stem}.float32.onnx"))
    with stages("export", f"exporting the float32 reference {src.name}"):
        exported = export_model(net, src, ExportSpec((imgsz, imgsz), 1), source=source or None)
    if not exported:
        raise UserError(f"the float32 export of {net.name} failed its own checks: {'; '.join(exported.failures())[:150]}")
    return src


def _save(quantized: Any, path: Path, recipe: Any) -> Path:
    """Our checkpoint of the quantized model: its tensors in float32 (quantizer ranges exact) and
    Model Optimizer's quantizer state."""
    from attn_deploy.models.checkpoint import write_checkpoint
    from attn_deploy.models.quantized import quantizer_state

    return write_checkpoint(path, quantized, {"qat": {"modelopt": quantizer_state(quantized), "recipe": asdict(recipe)}},
                            half=False)


def qat_for_onnx(onnx_file: str | Path, calib: Any, epochs: int, progress: Progress = lambda _: None) -> Any:
    """``calib FILE.onnx --precision int8 --qat N``: the model the export sidecar names (its
    ``source``), fine-tuned with calib's data, budget, floor and output."""
    from attn_deploy.models import load_model
    from attn_deploy.sidecar import read_sidecar

    src = Path(onnx_file)
    source = (read_sidecar(src) or {}).get("source") or {}
    if calib.precision != "int8" or not (source.get("weights") or source.get("model") or source.get("cfg")):
        raise UserError(f"--qat needs --precision int8 and a model to fine-tune: {src.name}'s export sidecar names none",
                        "export it with attn-deploy export first, or use attn-deploy qat --weights")
    _check_blocks(src, source.get("blocks"))
    net = load_model(source.get("model"), source.get("cfg"), source.get("weights"))
    opts = QatOptions(data=calib.data, epochs=epochs, calib_images=calib.images, max_map_drop=calib.max_map_drop,
                      min_int8=calib.min_int8, output=calib.output or src.with_name(f"{src.stem}.qat.int8.onnx"))
    return run_qat(opts, progress, net=net, reference=src)


def _check_blocks(src: Path, files: Any) -> None:
    """A model exported with ``--blocks`` needs them again to be rebuilt. The sidecar names the
    files, but a block file is code: it runs only when the user names it on the command line
    (given under another path, the loader's own error names a block still unknown)."""
    from attn_deploy.blocks import registered

    if files and not any(b.origin.endswith(".py") for b in registered()):
        raise UserError(f"{src.name} was exported with --blocks {' '.join(map(str, files))[:120]}: "
                        "name the same block files to fine-tune it (--blocks FILE.py)",
                        "block files are your code: they run only when you name them, never from a sidecar")
