"""Built-in model names: ``yolov5{n,s,m,l,x}`` and ``yolov5{n,s,m,l,x}-{attention key}``.

The base definition is ultralytics/yolov5 v6.0-v7.0's (P3-P5, SPPF). An attention variant
inserts one ``[-1, 1, <key>, [1024]]`` row after the last backbone C3, before SPPF, and shifts
every absolute layer reference behind it, as the YOLOAir and tutorial yaml files do.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any

from attn_deploy.errors import UserError
from attn_deploy.models.attention import find_attention, list_attention
from attn_deploy.models.yolo import DetectionModel, build_model

SCALES = {  # depth_multiple, width_multiple
    "n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25),
}

YOLOV5: dict[str, Any] = {
    "nc": 80,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [
        [-1, 1, "Conv", [64, 6, 2, 2]],  # 0-P1/2
        [-1, 1, "Conv", [128, 3, 2]],  # 1-P2/4
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],  # 3-P3/8
        [-1, 6, "C3", [256]],
        [-1, 1, "Conv", [512, 3, 2]],  # 5-P4/16
        [-1, 9, "C3", [512]],
        [-1, 1, "Conv", [1024, 3, 2]],  # 7-P5/32
        [-1, 3, "C3", [1024]],
        [-1, 1, "SPPF", [1024, 5]],  # 9
    ],
    "head": [
        [-1, 1, "Conv", [512, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],  # cat backbone P4
        [-1, 3, "C3", [512, False]],  # 13
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],  # cat backbone P3
        [-1, 3, "C3", [256, False]],  # 17 (P3/8-small)
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 14], 1, "Concat", [1]],  # cat head P4
        [-1, 3, "C3", [512, False]],  # 20 (P4/16-medium)
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],  # cat head P5
        [-1, 3, "C3", [1024, False]],  # 23 (P5/32-large)
        [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],  # Detect(P3, P4, P5)
    ],
}
ATTENTION_INDEX = 9  # after the last backbone C3 (8), before SPPF
SEED = 0

_NAME = re.compile(r"^yolov5([nsmlx])(?:-(\w+))?$", re.IGNORECASE)


def insert_row(cfg: dict[str, Any], index: int, row: list[Any]) -> dict[str, Any]:
    """A copy of cfg with ``row`` inserted as layer ``index``; absolute references shifted.

    Relative references (-1) keep meaning "the layer before", so the row after the inserted
    one now reads the inserted layer.
    """
    out = copy.deepcopy(cfg)
    rows = out["backbone"] + out["head"]
    nb = len(out["backbone"])
    shift = lambda j: j + 1 if j >= index else j  # noqa: E731
    for r in rows[index:]:
        r[0] = [shift(j) if j >= 0 else j for j in r[0]] if isinstance(r[0], list) else (shift(r[0]) if r[0] >= 0 else r[0])
    rows.insert(index, row)
    split = nb + 1 if index <= nb else nb
    out["backbone"], out["head"] = rows[:split], rows[split:]
    return out


def model_names() -> list[str]:
    plain = [f"yolov5{s}" for s in SCALES]
    return plain + [f"yolov5{s}-{k}" for s in SCALES for k in list_attention()]


def model_config(name: str) -> dict[str, Any]:
    """The yaml dict of a built-in name; a user error listing close names otherwise."""
    m = _NAME.match(name)
    spec = find_attention(m.group(2)) if m and m.group(2) else None
    if not m or (m.group(2) and spec is None):
        close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see 'attn-deploy models'"
        raise UserError(f"unknown model {name!r}", hint)
    gd, gw = SCALES[m.group(1).lower()]
    cfg = {"depth_multiple": gd, "width_multiple": gw, **copy.deepcopy(YOLOV5)}
    if spec is not None:
        cfg = insert_row(cfg, ATTENTION_INDEX, [-1, 1, spec.key, [1024]])
    return cfg


def canonical_name(name: str) -> str:
    m = _NAME.match(name)
    spec = find_attention(m.group(2)) if m and m.group(2) else None
    return f"yolov5{m.group(1).lower()}" + (f"-{spec.key}" if spec else "") if m else name


def create_model(name: str, nc: int | None = None, seed: int = SEED) -> DetectionModel:
    """A built-in model, initialised from a fixed seed so every build is identical."""
    return build_model(model_config(name), canonical_name(name), nc=nc, seed=seed)
