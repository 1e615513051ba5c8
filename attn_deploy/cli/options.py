"""Option sets and output helpers shared by the verbs."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import click

from attn_deploy.errors import UserError

# thresholds the user gives as probabilities, IoUs or agreement rates
UNIT = click.FloatRange(0.0, 1.0)
NON_NEGATIVE = click.FloatRange(0.0)


class ImageSize(click.ParamType):
    """``640`` (square) or ``480,640`` / ``480x640`` (H, W); sizes checked up front."""

    name = "N|H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        from attn_deploy.models.yolo import check_size_limits

        if isinstance(value, tuple):
            return value
        parts = re.split(r"[x,]", str(value).strip().lower())
        if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts) and len(str(value)) < 32:
            h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            try:
                return check_size_limits((h, w))
            except UserError as e:
                self.fail(e.message, param, ctx)
        self.fail(f"{str(value)[:40]!r} is not an image size (N, or H,W)", param, ctx)


def _load_blocks(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    from attn_deploy.models.loader import load_blocks

    load_blocks(value)


BLOCKS_HELP = ("Your own blocks: a Python file that registers module classes (see 'attn-deploy blocks'); "
               "repeatable. The file is imported and runs; the checkpoint's pickle never does.")


def blocks_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--blocks FILE.py (repeatable): imported as the option is read, before any model is loaded."""
    return click.option("--blocks", "blocks", multiple=True, type=click.Path(dir_okay=False), metavar="FILE.py",
                        expose_value=False, callback=_load_blocks, help=BLOCKS_HELP)(f)


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--model / --cfg / --weights / --blocks, shared by every verb that starts from a PyTorch model
    (the block files are imported as the options are read, before the model is loaded)."""
    f = blocks_option(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), help="yolov5/YOLOAir checkpoint or state dict (.pt).")(f)
    f = click.option("--cfg", type=click.Path(dir_okay=False), help="A yolov5-format model yaml.")(f)
    f = click.option("--model", "model_name", metavar="NAME", help="Built-in model, e.g. yolov5s-ca (see 'models').")(f)
    return f


TARGET_HELP = ("The box it will run on: a name from 'attn-deploy targets' (orin-jp6, nano-jp4.6, ...) or its "
               "facts, e.g. trt=8.6,dla=orin.")


class TargetType(click.ParamType):
    """--target NAME or facts (``attn_deploy.targets.get_target``); a bad one is one line, exit 2."""

    name = "TARGET"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from attn_deploy.targets import Target, get_target

        if isinstance(value, Target):
            return value
        return get_target(str(value))


def target_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--target", type=TargetType(), help=TARGET_HELP)(f)


AGREEMENT_HELP = ("Gate: detection agreement with PyTorch. Default by the candidate's precision: 0.95 (FP32, "
                  "FP16), 0.75 (INT8: its boxes move by a pixel).")
IOU_HELP = "The IoU at which two detections agree. Default: 0.9 (FP32, FP16), 0.5 (INT8)."
METHOD_HELP = ("INT8 activation ranges: max or entropy (Model Optimizer's), mse or percentile (each activation's "
               "from its histogram); best: max or entropy per layer, by each layer's local error.")


def method_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--method", type=click.Choice(["max", "entropy", "mse", "percentile", "best"]), default="max",
                        show_default=True, help=METHOD_HELP)(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def report_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--report", "report_dir", type=click.Path(file_okay=False),
                        help="Also write DIR/report.html (self-contained, opens offline) and DIR/report.json.")(f)


def check_report(directory: str | None) -> None:
    """A --report folder that cannot be written is refused before the work, not after."""
    if directory is not None:
        from attn_deploy.htmlreport.page import check_report_dir

        check_report_dir(directory)


def write_report(directory: str | None, page: Callable[[], Any], doc: dict[str, Any]) -> None:
    """Write the report when asked (before any gate exits: a failing run is when it is needed)."""
    if directory is None:
        return
    from attn_deploy.htmlreport import write_report as write

    try:
        path = write(directory, page(), doc)
    except OSError as e:
        raise UserError(f"cannot write the report in {directory}: {e.strerror or e}") from None
    click.echo(f"attn-deploy: report written to {path}", err=True)


def emit_json(doc: Any) -> None:
    from attn_deploy.files import to_json

    click.echo(to_json(doc))


def console(width: int = 100) -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=False, width=max(width, Console().width))


def gate(passed: bool, what: str, details: list[str]) -> None:
    """Exit 1 after a failed check, saying by how much on stderr."""
    if not passed:
        detail = f": {'; '.join(details)}" if details else ""
        click.echo(f"attn-deploy: {what}{detail}", err=True)
        raise SystemExit(1)


class Spinner:
    """A transient spinner on stderr for long steps; silent when stderr is not a terminal."""

    def __init__(self, message: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = self.console.status(message) if self.console.is_terminal else None

    def __enter__(self) -> Callable[[str], None]:
        if self.live is not None:
            self.live.__enter__()
        return self.update

    def update(self, message: str) -> None:
        if self.live is not None:
            self.live.update(message)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
