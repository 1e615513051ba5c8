"""The click group and the one place where failures become one line on stderr.

Every way a run can end badly is turned into ``attn-deploy: error: ...`` (one line, at most
about 240 characters) and an exit code: bad input 2 (ours, or click's own usage errors), a
failed check 1, a bug 3. ``--verbose`` adds what lies underneath (the library's text, the
traceback) above that line, for a bug report.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Any

import click

from attn_deploy import __version__
from attn_deploy.errors import AttnDeployError, AttnDeployWarning, one_line

PROG = "attn-deploy"
BUG_EXIT = 3
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2; 8.1 prints the help itself


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit ``code``."""
    click.echo(f"{PROG}: error: {one_line(message)}", err=True)
    sys.exit(code)


class Group(click.Group):
    """click.Group whose errors are all one line (click's own usage errors print three)."""

    def invoke(self, ctx: click.Context) -> Any:
        verbose = bool(ctx.params.get("verbose"))
        try:
            with warnings.catch_warnings():
                shown = warnings.showwarning
                warnings.showwarning = lambda message, category, *a, **k: (
                    click.echo(f"{PROG}: warning: {one_line(str(message))}", err=True)
                    if issubclass(category, AttnDeployWarning) else shown(message, category, *a, **k))
                return super().invoke(ctx)
        except AttnDeployError as e:
            if verbose:
                _show_cause(e)
            fail(str(e), e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except MemoryError:
            fail("out of memory: the input asks for more than this machine has", 2)
        except Exception as e:  # noqa: BLE001 - a bug: one line, the trace on request
            if verbose:
                traceback.print_exc()
            fail(f"internal error ({type(e).__name__}: {one_line(str(e), 120)}); "
                 "this is a bug: run with --verbose and report the traceback", BUG_EXIT)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NO_ARGS_IS_HELP as e:  # a bare 'attn-deploy': the help, not an error
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            fail(_usage_message(e), e.exit_code)
        except click.Abort:
            fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(e: click.ClickException) -> str:
    text = e.format_message()
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        return f"{text} (see '{ctx.command_path} --help')"
    return text


def _show_cause(e: AttnDeployError) -> None:
    """What lies under a user error: the library's text, and the exception it came from."""
    if e.detail:
        click.echo(e.detail, err=True)
    if e.__cause__ is not None:
        traceback.print_exception(e.__cause__, file=sys.stderr)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
@click.option("-v", "--verbose", is_flag=True, help="On bad input, also show the underlying library error.")
def main(verbose: bool) -> None:
    """Ship attention-augmented YOLOv5 detectors to NVIDIA GPUs, with proof."""
