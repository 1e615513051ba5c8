"""``calib``: FP16 or INT8 (Q/DQ) ONNX from a float32 one, within an accuracy budget."""

from __future__ import annotations

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import (
    NON_NEGATIVE,
    Spinner,
    check_report,
    console,
    emit_json,
    gate,
    json_option,
    report_option,
    write_report,
)


@main.command()
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["int8", "fp16"]), required=True)
@click.option("--data", type=click.Path(), help="Calibration images: a folder or a data.yaml (its train split).")
@click.option("--images", type=click.IntRange(1, 100_000), default=64, show_default=True, help="Calibration images used.")
@click.option("--method", type=click.Choice(["entropy", "max", "percentile", "best"]), default="max", show_default=True,
              help="INT8 activation calibration; best: max or entropy per layer, by each layer's local error.")
@click.option("--exclude", multiple=True, default=("auto",), show_default=True,
              help="auto (measure), none (quantize everything), or node-name patterns (regex), repeatable.")
@click.option("--val", type=click.Path(), help="Validation images (default: --data's val split).")
@click.option("--max-map-drop", type=NON_NEGATIVE, default=0.5, show_default=True,
              help="Budget: mAP50-95 points (disagreement %% without labels).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default FILE.int8.onnx / FILE.fp16.onnx.")
@click.option("--cache", type=click.Path(dir_okay=False), help="INT8: also write a TensorRT calibration cache.")
@click.option("--min-int8", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="INT8: the share of the model's multiply-accumulates that must run in INT8 (exit 1 below it).")
@report_option
@json_option
def calib(
    onnx_file: str, precision: str, data: str | None, images: int, method: str, exclude: tuple[str, ...],
    val: str | None, max_map_drop: float, output: str | None, cache: str | None, min_int8: float,
    report_dir: str | None, as_json: bool,
) -> None:
    """FP16 or INT8 (Q/DQ) ONNX from a float32 one, measured on validation images (exit 1 over budget)."""
    check_report(report_dir)
    from attn_deploy.calib.calibrate import CalibOptions, calibrate
    from attn_deploy.report import calib_table

    if len(exclude) > 1 and ("auto" in exclude or "none" in exclude):
        raise click.BadParameter("auto and none stand alone", param_hint="--exclude")
    opts = CalibOptions(precision, data, images, method, exclude, val, max_map_drop, output, cache, min_int8=min_int8)
    with Spinner("calibrating") as status:
        result = calibrate(onnx_file, opts, progress=status)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(calib_table(result))
    from attn_deploy.htmlreport.pages import calib_page

    write_report(report_dir, lambda: calib_page(result), result.to_dict())
    gate(result.passed, "calibration outside the budget" if result.int8_enough else "not INT8 enough",
         result.failures())
