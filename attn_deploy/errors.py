"""The one exception family for user-facing failures.

The library raises these; the CLI turns them into one line on stderr and an exit code.
Anything else that escapes is a bug: the CLI says so in one line (exit 3) and shows the
traceback with ``--verbose``.
"""

from __future__ import annotations

import re

MAX_MESSAGE = 240  # characters: one readable terminal line, give or take a long path


class AttnDeployError(Exception):
    """A failure the user can act on: bad input (exit 2) or a failed gate (exit 1).

    ``message`` and ``hint`` are ours and short; ``detail`` is a library's own text (a
    protobuf or zip reader's paragraph), shown only with ``--verbose``.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UserError(AttnDeployError):
    """Bad input: an unknown name, a missing or corrupt file, an invalid yaml row."""

    exit_code = 2


class GateFailed(AttnDeployError):
    """A check ran and its result is outside the tolerance the user asked for."""

    exit_code = 1


class AttnDeployWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one line)."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line of at most ``limit`` characters (whitespace runs folded)."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def library_text(e: BaseException, limit: int = 80) -> str:
    """A short tag for a library's exception inside one of our messages: its first line, cut."""
    text = str(e).strip()
    return one_line(text.splitlines()[0] if text else type(e).__name__, limit)
