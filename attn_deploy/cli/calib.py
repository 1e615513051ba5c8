"""``calib``: FP16 or INT8 (Q/DQ) ONNX from a float32 one, within an accuracy budget; ``qat``: INT8 by
quantization-aware fine-tuning of the PyTorch model, scored the same way."""

from __future__ import annotations

from typing import Any

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import (
    NON_NEGATIVE,
    Spinner,
    blocks_option,
    check_report,
    console,
    emit_json,
    gate,
    json_option,
    method_option,
    model_options,
    report_option,
    target_option,
    write_report,
)


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["int8", "fp16"]), required=True)
@click.option("--data", type=click.Path(), help="Calibration images: a folder or a data.yaml (its train split).")
@click.option("--images", type=click.IntRange(1, 100_000), default=64, show_default=True, help="Calibration images used.")
@method_option
@click.option("--exclude", multiple=True, default=("auto",), show_default=True,
              help="auto (measure), none (quantize everything), or node-name patterns (regex), repeatable.")
@click.option("--val", type=click.Path(), help="Validation images (default: --data's val split).")
@click.option("--max-map-drop", type=NON_NEGATIVE, default=0.5, show_default=True,
              help="Budget: mAP50-95 points (disagreement %% without labels).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default FILE.int8.onnx / FILE.fp16.onnx.")
@click.option("--cache", type=click.Path(dir_okay=False), help="INT8: also write a TensorRT calibration cache.")
@click.option("--min-int8", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="INT8: the share of the model's multiply-accumulates that must run in INT8 (exit 1 below it).")
@click.option("--qat", "qat_epochs", type=click.IntRange(1, 1000),
              help="INT8 by quantization-aware fine-tuning for N epochs instead (the model the export sidecar names; "
                   "--data: a data.yaml).")
@blocks_option
@target_option
@report_option
@json_option
def calib(
    onnx_file: str, precision: str, data: str | None, images: int, method: str, exclude: tuple[str, ...],
    val: str | None, max_map_drop: float, output: str | None, cache: str | None, min_int8: float,
    qat_epochs: int | None, target: Any, report_dir: str | None, as_json: bool,
) -> None:
    """FP16 or INT8 (Q/DQ) ONNX from a float32 one, measured on validation images (exit 1 over budget).
    With --target: a precision that box's GPU lacks is refused, and a --cache it cannot use."""
    check_report(report_dir)
    if target is not None:
        from attn_deploy.errors import UserError
        from attn_deploy.targets import check_precision

        check_precision(target, precision)
        if cache and not target.implicit_int8:
            raise UserError(f"--cache: {target.name}'s TensorRT {target.tensorrt} has no implicit INT8 calibrator; "
                                   "it builds the Q/DQ graph itself")
    from attn_deploy.calib.calibrate import CalibOptions, calibrate
    from attn_deploy.report import calib_table

    if len(exclude) > 1 and ("auto" in exclude or "none" in exclude):
        raise click.BadParameter("auto and none stand alone", param_hint="--exclude")
    opts = CalibOptions(precision, data, images, method, exclude, val, max_map_drop, output, cache, min_int8=min_int8)
    with Spinner("calibrating") as status:
        if qat_epochs is not None:
            from attn_deploy.qat import qat_for_onnx

            result = qat_for_onnx(onnx_file, opts, qat_epochs, progress=status)
        else:
            result = calibrate(onnx_file, opts, progress=status)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(calib_table(result))
    from attn_deploy.htmlreport.pages import calib_page

    write_report(report_dir, lambda: calib_page(result), result.to_dict())
    gate(result.passed, "calibration outside the budget" if result.int8_enough else "not INT8 enough",
         result.failures())


@main.command()
@model_options
@click.option("--data", type=click.Path(dir_okay=False), required=True,
              help="A YOLO data.yaml: its train split fine-tunes and calibrates, its val split scores.")
@click.option("--epochs", type=click.IntRange(1, 1000), default=2, show_default=True,
              help="Fine-tuning epochs; from 2 (and 40 train images) the epoch best on held-out train "
                   "images is kept.")
@click.option("--lr", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=1e-3, show_default=True,
              help="Fine-tuning learning rate (SGD with momentum, a cosine to 5 %).")
@click.option("--imgsz", type=click.IntRange(32, 4096), default=640, show_default=True, help="Input size (square).")
@click.option("--images", type=click.IntRange(1, 100_000), default=64, show_default=True, help="Calibration images.")
@click.option("--max-map-drop", type=NON_NEGATIVE, default=0.5, show_default=True, help="Budget: mAP50-95 points.")
@click.option("--min-int8", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="The share of multiply-accumulates that must run in INT8.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default NAME.qat.int8.onnx.")
@json_option
def qat(model_name: str | None, cfg: str | None, weights: str | None, data: str, epochs: int, lr: float, imgsz: int,
        images: int, max_map_drop: float, min_int8: float, output: str | None, as_json: bool) -> None:
    """INT8 by quantization-aware fine-tuning: fake quantization in the PyTorch model (Model Optimizer),
    a short fine-tune, a Q/DQ ONNX scored against float32 as calib scores (exit 1 over budget)."""
    from attn_deploy.qat import QatOptions, run_qat
    from attn_deploy.report import calib_table

    opts = QatOptions(model_name, cfg, weights, data, epochs, lr, imgsz, images, max_map_drop, min_int8, output)
    with Spinner("quantization-aware fine-tuning") as status:
        result = run_qat(opts, progress=status)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(calib_table(result))
    gate(result.passed, "calibration outside the budget" if result.int8_enough else "not INT8 enough",
         result.failures())
