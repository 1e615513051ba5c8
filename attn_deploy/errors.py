"""The one exception family for user-facing failures.

The library raises these; ``cli.py`` turns them into one line on stderr and an exit code.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class AttnDeployError(Exception):
    """A failure the user can act on: bad input (exit 2) or a failed gate (exit 1)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UserError(AttnDeployError):
    """Bad input: an unknown name, a missing or corrupt file, an invalid yaml row."""

    exit_code = 2


class GateFailed(AttnDeployError):
    """A check ran and its result is outside the tolerance the user asked for."""

    exit_code = 1
