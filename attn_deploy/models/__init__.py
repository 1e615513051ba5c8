"""Models: the attention registry, YOLOv5 from yaml, the zoo, safe checkpoint loading."""

from __future__ import annotations

from attn_deploy.models.attention import get_attention, list_attention
from attn_deploy.models.info import ModelInfo, model_info
from attn_deploy.models.loader import load_model
from attn_deploy.models.yolo import DetectionModel, check_imgsz
from attn_deploy.models.zoo import create_model, model_names

__all__ = [
    "DetectionModel",
    "ModelInfo",
    "check_imgsz",
    "create_model",
    "get_attention",
    "list_attention",
    "load_model",
    "model_info",
    "model_names",
]
