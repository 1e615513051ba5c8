"""The anchor-free family (YOLOv8, YOLO11, YOLO12, YOLO26): blocks, head, parser and definitions.

Not yet in the zoo's names or the CLI: ``create_anchor_free('yolo11n')`` builds one.
"""

from __future__ import annotations

from attn_deploy.models.anchorfree.archs import (
    FAMILIES,
    anchor_free_config,
    anchor_free_names,
    create_anchor_free,
)
from attn_deploy.models.anchorfree.model import AnchorFreeModel, build_anchor_free, guess_scale

__all__ = [
    "FAMILIES",
    "AnchorFreeModel",
    "anchor_free_config",
    "anchor_free_names",
    "build_anchor_free",
    "create_anchor_free",
    "guess_scale",
]
