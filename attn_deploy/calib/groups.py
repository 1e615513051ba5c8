"""Candidate groups for higher precision: a model's attention blocks, its Detect head and its
first convolution, found in the ONNX by the ``/model.<i>/`` scope the export gives node names.

The layer table comes from the export sidecar (``layers``: index, module class, whether it is
an attention block). Without it, only the first and the last layer are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import onnx

from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import layer_nodes


@dataclass(frozen=True)
class Group:
    name: str  # "model.9 CoordinateAttention"
    layer: int
    module: str
    nodes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "module": self.module, "nodes": len(self.nodes)}


def candidate_groups(model: onnx.ModelProto, layers: list[dict[str, Any]] | None) -> list[Group]:
    """First convolution, every attention block, the Detect head: in layer order."""
    nodes = layer_nodes(model)
    if not nodes:
        return []
    table = {row["index"]: row for row in layers or []}
    first, last = min(nodes), max(nodes)
    picked = {first: table.get(first, {}).get("module", "first layer"), last: table.get(last, {}).get("module", "Detect")}
    picked.update({i: row["module"] for i, row in table.items() if row.get("attention") and i in nodes})
    return [Group(f"model.{i} {module}", i, module, tuple(nodes[i])) for i, module in sorted(picked.items())]


def compile_patterns(patterns: list[str]) -> list[re.Pattern[str]]:
    """``--exclude`` patterns as regular expressions; a broken one is a user error."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise UserError(f"--exclude {p[:40]!r} is not a regular expression ({e.msg})") from e
    return out


def nodes_matching(model: onnx.ModelProto, patterns: list[str]) -> list[str]:
    """Node names that any of the regular expressions matches (re.search)."""
    compiled = compile_patterns(patterns)
    return [n.name for n in model.graph.node if any(c.search(n.name) for c in compiled)]
