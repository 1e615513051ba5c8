"""Make attn-deploy's per-version TensorRT parser tables from onnx-tensorrt's support matrix.

    python tools/parser_tables.py tests/sources/onnx-tensorrt/operators-8.2-GA.md 8.2 > attn_deploy/targets/parser/trt-8.2.csv

The input is ``docs/operators.md`` of an onnx-tensorrt release branch (the copies under
``tests/sources/onnx-tensorrt`` name their branch and commit). Each row becomes: the op, Y or N,
the data types as lint names them, and the restrictions lint can decide on a graph, as rule
keys (``RULES``); a restriction with no key is kept out of the table and left to TensorRT.
``tests/test_targets.py`` parses the same copies and checks every row of every table against them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

# restriction text (as onnx-tensorrt words it) -> the rule lint checks
RULES = {
    "axes-constant": re.compile(r"`axes` must be an? (initializer|constant)"),
    "k-constant": re.compile(r"`K` input must be an initializer"),
    "inputs-constant": re.compile(r"Inputs `max_output_boxes_per_class`.*must be initializers"),
}
TYPE_ALIASES = {"FLOAT32": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16"}


@dataclass(frozen=True)
class Row:
    op: str
    supported: bool
    types: tuple[str, ...]
    rules: tuple[str, ...]


def opset_range(text: str) -> tuple[int, int]:
    """The opsets the header says the release parses: "up to Opset 13" or "opset 9 to opset 20"."""
    if m := re.search(r"range of opset (\d+) to opset (\d+)", text, re.I):
        return int(m.group(1)), int(m.group(2))
    if m := re.search(r"up to Opset (\d+)", text, re.I):
        return 1, int(m.group(1))
    raise ValueError("no opset range in the header")


def parse(text: str) -> list[Row]:
    """The support matrix's rows, in file order."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("Operator", "") or set(cells[0]) <= {"-"}:
            continue
        cells += [""] * (4 - len(cells))
        types = tuple(TYPE_ALIASES.get(t, t) for t in re.split(r"[,\s]+", cells[2]) if t)
        rules = tuple(key for key, pattern in RULES.items() if pattern.search(cells[3]))
        rows.append(Row(cells[0], cells[1].startswith("Y"), types, rules))
    return rows


def to_csv(rows: list[Row], version: str, source: str) -> str:
    head = [
        f"# TensorRT {version} ONNX-parser operator support, as attn-deploy's lint reads it.",
        f"# Made by tools/parser_tables.py from {source}.",
        "# supported: Y or N; types: the data types listed for the op's data tensor; rules: the",
        "# restrictions lint decides on a graph (tools/parser_tables.py RULES).",
        "op,supported,types,rules",
    ]
    body = [f"{r.op},{'Y' if r.supported else 'N'},{' '.join(r.types)},{' '.join(r.rules)}" for r in rows]
    return "\n".join(head + body) + "\n"


def main(argv: list[str]) -> int:
    path, version = Path(argv[0]), argv[1]
    text = path.read_text()
    first = text.splitlines()[0]
    source = re.sub(r"^<!-- |,? \(Apache.*$", "", first)
    low, high = opset_range(text)
    sys.stdout.write(to_csv(parse(text), version, f"{source}; opsets {low}-{high}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
