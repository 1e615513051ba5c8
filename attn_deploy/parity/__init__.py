"""Parity: tensor comparison, NMS, detection matching, mAP, reports."""

from __future__ import annotations

from attn_deploy.parity.nms import Detections, multiclass_nms
from attn_deploy.parity.tensor import TensorParity, TensorStats, Tolerances, compare, merge

__all__ = ["Detections", "TensorParity", "TensorStats", "Tolerances", "compare", "merge", "multiclass_nms"]
