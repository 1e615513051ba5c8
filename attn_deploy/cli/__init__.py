"""The ``attn-deploy`` command line: one click group, one short module per verb family.

Each verb parses its options, calls one library function and prints the result: a table on
stdout, or with ``--json`` one JSON document on stdout and nothing else there. Every failure
becomes one line on stderr and an exit code (``cli/group.py``).
"""

from __future__ import annotations

from attn_deploy.cli import blocks, calib, engines, export, models, parity, serve, ship  # noqa: F401 - each registers its verbs
from attn_deploy.cli.group import PROG, main

__all__ = ["main", "run"]


def run() -> None:  # pragma: no cover - console-script shim
    main(prog_name=PROG)
