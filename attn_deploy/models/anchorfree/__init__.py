"""The anchor-free family (YOLOv8, YOLO11, YOLO12, YOLO26): blocks, head, parser and definitions.

Built-in names go through the zoo: ``attn_deploy.models.zoo.create_model('yolo11n')``.
"""

from __future__ import annotations

from attn_deploy.models.anchorfree.archs import FAMILIES
from attn_deploy.models.anchorfree.model import AnchorFreeModel, build_anchor_free, guess_scale

__all__ = ["FAMILIES", "AnchorFreeModel", "build_anchor_free", "guess_scale"]
