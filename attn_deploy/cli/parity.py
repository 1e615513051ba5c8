"""``parity``: the ship/no-ship gate of a deployable file against PyTorch."""

from __future__ import annotations

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import (
    AGREEMENT_HELP,
    IOU_HELP,
    NON_NEGATIVE,
    UNIT,
    ImageSize,
    Spinner,
    check_report,
    console,
    emit_json,
    gate,
    json_option,
    model_options,
    report_option,
    write_report,
)


@main.command()
@model_options
@click.option("--against", "candidate", required=True, type=click.Path(dir_okay=False), help="The candidate: FILE.onnx.")
@click.option("--data", type=click.Path(), help="Images: a folder, an image, or a YOLO data.yaml (its val split, with labels: mAP).")
@click.option("--imgsz", type=ImageSize(), help="Input size for a candidate with dynamic H, W (default 640).")
@click.option("--max-images", type=click.IntRange(1), help="Use at most N images.")
@click.option("--max-map-drop", type=NON_NEGATIVE, default=0.5, show_default=True, help="Gate: mAP50-95 drop in points.")
@click.option("--min-agreement", type=UNIT, help=AGREEMENT_HELP)
@click.option("--agreement-iou", type=UNIT, help=IOU_HELP)
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="Unreadable images or labels: leave them out, or stop.")
@click.option("--per-block", is_flag=True, help="Also each yaml layer's accumulated and local error, and the culprit.")
@click.option("--block-images", type=click.IntRange(1), default=32, show_default=True, help="With --per-block: images used.")
@click.option("--block-tolerance", type=NON_NEGATIVE, default=1e-2, show_default=True,
              help="With --per-block: relative local error above which the worst layer is named the culprit.")
@report_option
@json_option
def parity(
    model_name: str | None, cfg: str | None, weights: str | None, candidate: str, data: str | None,
    imgsz: tuple[int, int] | None, max_images: int | None, max_map_drop: float, min_agreement: float | None,
    agreement_iou: float | None, on_error: str, per_block: bool, block_images: int, block_tolerance: float,
    report_dir: str | None, as_json: bool,
) -> None:
    """Judge a deployable model against PyTorch: tensors, detections, mAP (exit 1 if outside the gates)."""
    check_report(report_dir)
    from attn_deploy.diagnose.run import BlockOptions, open_blocks, per_block_parity
    from attn_deploy.engines import runner_for
    from attn_deploy.models import load_model
    from attn_deploy.models.heads import match_sidecar
    from attn_deploy.parity.check import ParityOptions, check_parity
    from attn_deploy.parity.gates import gates_for
    from attn_deploy.report import blocks_table, parity_table
    from attn_deploy.sidecar import export_sidecar

    net = load_model(model_name, cfg, weights)
    gates = gates_for(candidate, min_agreement, agreement_iou, max_map_drop)
    opts = ParityOptions(data, imgsz, max_images, on_error, gates, examples=6 if report_dir else 0)
    with Spinner("comparing") as status:
        runner = runner_for(candidate)  # the file is checked here, before the per-block backend reads it
        match_sidecar(net, export_sidecar(candidate))  # e.g. YOLO26 exported end-to-end
        blocks = open_blocks(candidate, net) if per_block else None
        result = check_parity(net, runner, candidate, opts,
                              progress=lambda done, total: status(f"comparing: {done}/{total} images"))
        if blocks is not None:
            status("per-block: each layer against PyTorch")
            result.blocks = per_block_parity(net, runner, opts, blocks, BlockOptions(block_images, block_tolerance))
    for line in result.skipped:
        click.echo(f"attn-deploy: skipped {line}", err=True)
    if result.skipped:
        click.echo(f"attn-deploy: compared {result.images} of {result.requested} images "
                   f"({len(result.skipped)} left out, above)", err=True)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(parity_table(result))
        if result.blocks is not None:
            console(120).print(blocks_table(result.blocks))
    from attn_deploy.htmlreport.pages import parity_page

    write_report(report_dir, lambda: parity_page(result, list(net.names)), result.to_dict())
    gate(result.passed, "parity gate failed", result.failures())



@main.command()
@model_options
@click.option("--fork", "fork", required=True, type=click.Path(file_okay=False),
              help="The fork's repository (the folder holding its models/): its code is imported and run.")
@click.option("--python", "python", type=click.Path(dir_okay=False),
              help="The interpreter of the fork's environment (default: this one).")
@click.option("--data", type=click.Path(), help="Images: a folder, an image, or a YOLO data.yaml (default: random images).")
@click.option("--imgsz", type=ImageSize(), default="640", show_default=True, help="Input size: N or H,W.")
@click.option("--images", "count", type=click.IntRange(1, 64), default=2, show_default=True, help="Images compared.")
@json_option
def verify(model_name: str | None, cfg: str | None, weights: str | None, fork: str, python: str | None,
           data: str | None, imgsz: tuple[int, int], count: int, as_json: bool) -> None:
    """Compare our rebuild of --weights with the fork's own model, layer by layer (exit 1 at the first
    layer that differs). This runs the fork's code and the checkpoint's pickle, in a separate
    process: only for a fork and a checkpoint you trust."""
    from attn_deploy.diagnose.fork import verify_fork, verify_images
    from attn_deploy.models import load_model
    from attn_deploy.report import verify_table

    if not weights:
        raise click.UsageError("verify needs --weights: the checkpoint the fork trained")
    net = load_model(model_name, cfg, weights)
    images = verify_images(data, imgsz, count)
    with Spinner("running the fork's code and our rebuild"):
        result = verify_fork(net, weights, fork, images, python)
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(verify_table(result))
    gate(result.passed, "our rebuild differs from the fork", result.failures())
