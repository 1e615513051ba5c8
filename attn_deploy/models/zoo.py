"""Built-in model names, by family: ``yolov5``, ``yolov8``, ``yolo11``, ``yolo12``, ``yolo26``,
each with a scale letter ``n, s, m, l, x`` and optionally ``-KEY`` for one of our attention modules.

YOLOv5 is ultralytics/yolov5 v6.0-v7.0's definition (P3-P5, SPPF); the anchor-free families
are in ``anchorfree/archs.py``. An attention variant inserts one ``[-1, 1, KEY, [1024]]`` row
as layer 9 and shifts every absolute layer reference behind it, as the YOLOAir and tutorial
yaml files do. Layer 9 is right after the backbone's last stage in every family: before SPPF
in YOLOv5, YOLOv8, YOLO11 and YOLO26 (so it also precedes YOLO11/YOLO26's C2PSA), and at the
end of YOLO12's backbone (which has no SPPF). That is where the "improved YOLO with CBAM/CA"
papers put it: on the deepest, smallest map, where it costs least.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any

from attn_deploy.errors import UserError
from attn_deploy.models.anchorfree import AnchorFreeModel, build_anchor_free
from attn_deploy.models.anchorfree.archs import FAMILIES as ANCHOR_FREE
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

FAMILIES = ("yolov5", *ANCHOR_FREE)
_NAME = re.compile(r"^(yolov5|yolov8|yolo11|yolo12|yolo26)([nsmlx])(?:-(\w+))?$", re.IGNORECASE)


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


def model_names(family: str | None = None) -> list[str]:
    """Every built-in name (or one family's): plain scales first, then the attention variants."""
    out = []
    for fam in ([family] if family else FAMILIES):
        out += [f"{fam}{s}" for s in SCALES] + [f"{fam}{s}-{k}" for s in SCALES for k in list_attention()]
    return out


def family_of(name: str) -> str | None:
    """``yolov5``, ``yolov8``, ``yolo11``, ``yolo12`` or ``yolo26`` for a built-in name, else None."""
    m = _NAME.match(name)
    return m.group(1).lower() if m else None


def _parse(name: str) -> tuple[str, str, str | None]:
    """(family, scale, attention key or None) of a built-in name; a user error listing close names."""
    m = _NAME.match(name)
    spec = find_attention(m.group(3)) if m and m.group(3) else None
    if not m or (m.group(3) and spec is None):
        close = difflib.get_close_matches(name.lower(), model_names(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see 'attn-deploy models'"
        raise UserError(f"unknown model {name!r}", hint)
    return m.group(1).lower(), m.group(2).lower(), spec.key if spec else None


def model_config(name: str) -> dict[str, Any]:
    """The yaml dict of a built-in name (an anchor-free one carries its letter under ``scale``)."""
    family, scale, key = _parse(name)
    if family == "yolov5":
        gd, gw = SCALES[scale]
        cfg = {"depth_multiple": gd, "width_multiple": gw, **copy.deepcopy(YOLOV5)}
    else:
        cfg = {**copy.deepcopy(ANCHOR_FREE[family]), "scale": scale}
    return insert_row(cfg, ATTENTION_INDEX, [-1, 1, key, [1024]]) if key else cfg


def canonical_name(name: str) -> str:
    try:
        family, scale, key = _parse(name)
    except UserError:
        return name
    return f"{family}{scale}" + (f"-{key}" if key else "")


def create_model(name: str, nc: int | None = None, seed: int = SEED) -> DetectionModel | AnchorFreeModel:
    """A built-in model, initialised from a fixed seed so every build is identical."""
    family, scale, _ = _parse(name)
    if family == "yolov5":
        return build_model(model_config(name), canonical_name(name), nc=nc, seed=seed)
    return build_anchor_free(model_config(name), canonical_name(name), scale=scale, nc=nc, seed=seed)
