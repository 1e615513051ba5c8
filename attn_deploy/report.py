"""Tables for people: how results print in a terminal (rich). JSON comes from the results."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from attn_deploy.models.info import ModelInfo


def _paper(cls: type) -> str:
    """The paper line of a module's docstring (its first sentence)."""
    doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def models_table() -> list[Any]:
    from attn_deploy.models.attention import attention_aliases, get_attention, list_attention
    from attn_deploy.models.zoo import SCALES

    names = Table(title="Built-in models", show_header=True)
    names.add_column("name")
    names.add_column("what")
    scales = ",".join(SCALES)
    names.add_row(f"yolov5{{{scales}}}", "YOLOv5 v6/v7 (P3-P5, SPPF), 80 classes")
    names.add_row(f"yolov5{{{scales}}}-KEY", "the same with one attention block after the last backbone C3")
    attn = Table(title="Attention modules (KEY)", show_header=True)
    for col in ("key", "yaml names", "paper"):
        attn.add_column(col, overflow="fold")
    aliases = attention_aliases()
    for key in list_attention():
        attn.add_row(key, ", ".join(aliases[key]), _paper(get_attention(key).cls))
    return [names, attn]


def info_table(info: ModelInfo) -> Table:
    h, w = info.imgsz
    t = Table(title=f"{info.name}: {info.params:,} parameters, {info.gflops:.1f} GFLOPs at {h}x{w}")
    for col, justify in (("#", "right"), ("from", "right"), ("n", "right"), ("module", "left"),
                         ("args", "left"), ("params", "right"), ("GFLOPs", "right"), ("output", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for layer in info.layers:
        t.add_row(
            str(layer.index), str(layer.source), str(layer.number), layer.module, str(layer.args),
            f"{layer.params:,}", f"{layer.gflops:.2f}", "x".join(map(str, layer.shape)),
        )
    return t
