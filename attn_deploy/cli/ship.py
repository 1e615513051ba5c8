"""``ship``: weights to a checked deployable in one command (verify, export, calib, build, parity, report)."""

from __future__ import annotations

from typing import Any

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import (
    AGREEMENT_HELP,
    IOU_HELP,
    NON_NEGATIVE,
    UNIT,
    ImageSize,
    Spinner,
    console,
    emit_json,
    gate,
    json_option,
    method_option,
    model_options,
    target_option,
)


@main.command()
@model_options
@click.option("--data", type=click.Path(), help="Images: a folder or a YOLO data.yaml (calibration: train split; parity: val).")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--imgsz", type=ImageSize(), default="640", show_default=True, help="Input size: N or H,W.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Batch size of the graph.")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width (fp32 only: calib needs a fixed size).")
@click.option("--end2end", is_flag=True, help="YOLO26: the NMS-free one-to-one head, output0 (N, max-det, 6).")
@click.option("--max-det", type=click.IntRange(1, 3839), default=300, show_default=True, help="With --end2end: detections per image.")
@click.option("-o", "--output", type=click.Path(), help="Output folder (default ./NAME-ship); must be new or empty.")
@click.option("--force", is_flag=True, help="Write into a non-empty folder (a previous ship's files there are replaced).")
@click.option("--max-images", type=click.IntRange(1), help="Parity: use at most N images.")
@click.option("--max-map-drop", type=NON_NEGATIVE, default=0.5, show_default=True,
              help="Calib's budget and parity's gate: mAP50-95 drop in points.")
@click.option("--min-agreement", type=UNIT, help=AGREEMENT_HELP)
@click.option("--agreement-iou", type=UNIT, help=IOU_HELP)
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="Unreadable images or labels: leave them out, or stop.")
@click.option("--calib-images", type=click.IntRange(1, 100_000), default=64, show_default=True, help="Calibration images used.")
@method_option
@click.option("--exclude", multiple=True, default=("auto",), show_default=True,
              help="INT8: auto (measure), none (quantize everything), or node-name patterns (regex), repeatable.")
@click.option("--min-int8", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="INT8: the share of multiply-accumulates that must run in INT8.")
@click.option("--qat", type=click.IntRange(1, 1000), help="INT8 by N epochs of quantization-aware fine-tuning.")
@click.option("--fork", type=click.Path(file_okay=False),
              help="First verify the rebuild against the fork's own code (see 'verify'; its code runs).")
@click.option("--python", type=click.Path(dir_okay=False), help="With --fork: the fork environment's interpreter.")
@target_option
@json_option
def ship(
    model_name: str | None, cfg: str | None, weights: str | None, data: str | None, precision: str,
    imgsz: tuple[int, int], batch: int, dynamic: bool, end2end: bool, max_det: int, output: str | None, force: bool,
    max_images: int | None,
    max_map_drop: float, min_agreement: float | None, agreement_iou: float | None, on_error: str, calib_images: int,
    method: str,
    exclude: tuple[str, ...], min_int8: float, qat: int | None, fork: str | None, python: str | None, target: Any,
    as_json: bool,
) -> None:
    """Export, calibrate, build (where TensorRT is) and check against PyTorch, into one folder (exit 1 at a failed gate)."""
    from attn_deploy.shipping import ShipOptions, steps_table
    from attn_deploy.shipping import ship as run_ship

    opts = ShipOptions(model_name, cfg, weights, data, precision, imgsz, batch, dynamic, end2end=end2end, max_det=max_det,
                       output=output, force=force,
                       max_images=max_images, min_agreement=min_agreement, agreement_iou=agreement_iou,
                       max_map_drop=max_map_drop, on_error=on_error,
                       calib_images=calib_images, method=method, exclude=exclude, min_int8=min_int8, qat=qat,
                       fork=fork, python=python, target=target)
    spinner = Spinner("shipping")
    with spinner as status:
        result = run_ship(opts, progress=status, notice=lambda line: _say(spinner, line))
    if result.parity is not None and result.parity.skipped:
        click.echo(f"attn-deploy: parity compared {result.parity.images} of {result.parity.requested} images "
                   f"({len(result.parity.skipped)} unreadable, listed in report.json)", err=True)
    if as_json:
        emit_json(result.to_dict())
    else:
        console(120).print(steps_table(result))
    gate(result.passed, f"ship stopped at {result.failed}", [s.why for s in result.steps if s.status == "fail"])


def _say(spinner: Any, line: str) -> None:
    """One line on stderr, above the spinner when it is showing."""
    if spinner.live is not None:
        spinner.console.print(f"attn-deploy: {line}", markup=False, highlight=False, soft_wrap=True)
    else:
        click.echo(f"attn-deploy: {line}", err=True)
