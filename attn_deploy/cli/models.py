"""``models``, ``info`` and ``targets``: what is built in, what a model holds, the boxes it can go to."""

from __future__ import annotations

import click

from attn_deploy.cli.group import main
from attn_deploy.cli.options import ImageSize, console, emit_json, json_option, model_options


@main.command()
@json_option
def models(as_json: bool) -> None:
    """List the built-in models and attention modules."""
    from attn_deploy.models import model_names
    from attn_deploy.models.attention import list_attention
    from attn_deploy.report import models_table

    if as_json:
        from attn_deploy.models.zoo import FAMILIES

        emit_json({"models": model_names(), "families": {f: model_names(f) for f in FAMILIES},
                   "attention": list_attention()})
    else:
        console().print(*models_table())


@main.command()
@model_options
@click.option("--imgsz", type=ImageSize(), default="640", show_default=True, help="Input size: N or H,W.")
@json_option
def info(model_name: str | None, cfg: str | None, weights: str | None, imgsz: tuple[int, int], as_json: bool) -> None:
    """Parameters, GFLOPs and the per-layer table of a model."""
    from attn_deploy.models import check_imgsz, load_model, model_info
    from attn_deploy.report import info_table

    net = load_model(model_name, cfg, weights)
    result = model_info(net, check_imgsz(imgsz, int(net.stride.max())))
    if as_json:
        emit_json(result.to_dict())
    else:
        console().print(info_table(result))


@main.command()
@json_option
def targets(as_json: bool) -> None:
    """List the deployment targets: TensorRT, parser table and opsets, GPU precisions, DLA."""
    from attn_deploy.report import targets_table
    from attn_deploy.targets import targets as named

    if as_json:
        emit_json({"targets": [{**t.to_dict(), "description": t.description,
                                "sources": {k: t.source_of(k) for k in t.sources}} for t in named()]})
    else:
        console().print(targets_table(named()))
