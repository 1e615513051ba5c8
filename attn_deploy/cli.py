"""The ``attn-deploy`` command line: one click group, one short function per verb.

Each verb parses its options, calls one library function and prints the result: a table on
stdout, or with ``--json`` one JSON document on stdout and nothing else there. Library errors
(``AttnDeployError``) become one line on stderr and their exit code.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable

import click

from attn_deploy import __version__
from attn_deploy.errors import AttnDeployError


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AttnDeployError as e:
            click.echo(f"attn-deploy: error: {e}", err=True)
            ctx.exit(e.exit_code)


class ImageSize(click.ParamType):
    """``640`` (square) or ``480,640`` / ``480x640`` (H, W)."""

    name = "N|H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = re.split(r"[x,]", str(value).strip().lower())
        if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
            h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            return h, w
        self.fail(f"{value!r} is not an image size (N, or H,W)", param, ctx)


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--model / --cfg / --weights, shared by every verb that starts from a PyTorch model."""
    f = click.option("--weights", type=click.Path(dir_okay=False), help="yolov5/YOLOAir checkpoint or state dict (.pt).")(f)
    f = click.option("--cfg", type=click.Path(dir_okay=False), help="A yolov5-format model yaml.")(f)
    f = click.option("--model", "model_name", metavar="NAME", help="Built-in model, e.g. yolov5s-ca (see 'models').")(f)
    return f


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def _console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=False, width=max(100, Console().width))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attn-deploy")
def main() -> None:
    """Ship attention-augmented YOLOv5 detectors to NVIDIA GPUs, with proof."""


@main.command()
@json_option
def models(as_json: bool) -> None:
    """List the built-in models and attention modules."""
    from attn_deploy.models import model_names
    from attn_deploy.models.attention import list_attention
    from attn_deploy.report import models_table

    if as_json:
        emit_json({"models": model_names(), "attention": list_attention()})
    else:
        _console().print(*models_table())


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
        _console().print(info_table(result))


def run() -> None:  # pragma: no cover - console-script shim
    main(prog_name="attn-deploy")

