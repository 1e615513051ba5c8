"""Imports point down (DESIGN.md): cli → calib → diagnose → parity/exporter → engines → models →
data/targets (a deployment box's facts, read by lint, export and the engine steps). Every import in every module counts, the lazy ones inside functions too: a backend
never imports calib or parity, and diagnose is used by neither engines nor parity. calib
stands above diagnose: its INT8 search ranks layers by per-block parity of the naive graph."""

from __future__ import annotations

import ast
from pathlib import Path

import attn_deploy

ROOT = Path(attn_deploy.__file__).parent
LEVEL = {"data": 0, "ops": 0, "targets": 0, "blocks": 1, "models": 1, "engines": 2, "parity": 3, "exporter": 3, "diagnose": 4, "train": 4, "calib": 5,
         "report": 6, "htmlreport": 6, "shipping": 6, "serve": 6, "qat": 6, "cli": 7}
NEUTRAL = {"__init__", "errors", "files", "sidecar", "onnxfile", "layouts", "schemas"}  # read by every layer, import no layer
# The package's face re-exports the layers' API on first use (PEP 562), above them all; the
# layers take only __version__ from it, and 'import attn_deploy' loads no layer (test_ship.py).
FACE = "__init__"
APART = {("calib", "train"), ("train", "diagnose")}  # near levels, still strangers
# Known and explained, to be removed, never added to (empty: keep it so).
KNOWN: set[tuple[str, str]] = set()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level attn_deploy part) of every import in ``path``, at any depth."""
    return imports_in(path.read_text(), path.relative_to(ROOT).parent.parts)


def imports_in(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = ("attn_deploy", *package)[: len(package) + 2 - node.level]
                base = ".".join([*parts, *([base] if base else [])])
            names = [base]
        else:
            continue
        out += [(node.lineno, n.split(".")[1] if "." in n else "__init__") for n in names
                if n == "attn_deploy" or n.startswith("attn_deploy.")]
    return out


def part_of(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def test_every_top_level_part_has_a_level() -> None:
    parts = {part_of(p) for p in ROOT.rglob("*.py")}
    assert parts <= set(LEVEL) | NEUTRAL, parts - set(LEVEL) - NEUTRAL


def test_imports_point_down() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        src, rel = part_of(path), path.relative_to(ROOT).as_posix()
        for line, dst in imports(path):
            if src == FACE or dst == src or dst in NEUTRAL or (rel, dst) in KNOWN:
                continue
            if src in NEUTRAL or LEVEL[dst] > LEVEL[src] or (src, dst) in APART:
                wrong.append(f"{rel}:{line} imports attn_deploy.{dst}")
    assert not wrong, "imports against DESIGN.md's direction:\n" + "\n".join(wrong)


def test_the_rule_sees_lazy_and_relative_imports() -> None:
    source = "import attn_deploy.data\ndef f():\n    from attn_deploy.calib import cache\n    from ..parity import check\n"
    assert sorted(imports_in(source, ("engines",))) == [(1, "data"), (3, "calib"), (4, "parity")]


def test_known_exceptions_are_still_needed() -> None:
    for rel, dst in KNOWN:
        assert dst in {d for _, d in imports(ROOT / rel)}, f"{rel} no longer imports {dst}: drop it from KNOWN"
