"""The page model (sections of tables and figures), rendered by ``report.html.j2`` in the site's
look: its CSS colours and fonts come from ``data/style.py``."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from attn_deploy import __version__
from attn_deploy.data import style
from attn_deploy.errors import UserError
from attn_deploy.files import atomic_write, check_writable, to_json


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    title: str = ""
    marks: list[str] = field(default_factory=list)  # a CSS class per row ("attention", "culprit", "")


@dataclass
class Figure:
    png: bytes
    caption: str

    @property
    def src(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    wide: bool = False  # figures one per row instead of a grid


@dataclass
class Page:
    title: str
    verdict: bool | None  # pass / fail / no gate
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def from_rich(table: Any) -> Table:
    """A rich Table (what the terminal shows) as a plain page table: one text, two outputs."""
    from rich.text import Text

    def plain(cell: Any) -> str:
        return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)

    columns = list(table.columns)
    rows = [[plain(c) for c in cells] for cells in zip(*(col.cells for col in columns))]
    return Table([plain(c.header) for c in columns], rows, plain(table.title or ""))


def render(page: Page) -> str:
    import jinja2

    template = resources.files(__package__).joinpath("report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        page=page, version=__version__, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), css=style.css_vars())


def check_report_dir(directory: str | Path) -> Path:
    """Refuse, before any work, a report folder that cannot be made or written."""
    out = Path(directory)
    base = out
    while not base.exists() and base != base.parent:  # where mkdir will start
        base = base.parent
    if not base.is_dir():
        raise UserError(f"cannot write the report in {out}: {'it' if base == out else base} is a file")
    try:
        check_writable(base / "report.html")
    except UserError as e:
        raise UserError(f"cannot write the report in {out}: {base} is not writable") from e
    return out


def write_report(directory: str | Path, page: Page, doc: dict[str, Any]) -> Path:
    """``DIR/report.html`` and ``DIR/report.json``, each written whole or not at all."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    html = render(page)
    atomic_write(out / "report.json", to_json(doc).encode())
    return atomic_write(out / "report.html", html.encode("utf-8"))
