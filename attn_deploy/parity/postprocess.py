"""From a decoded model output to detections in each original image's pixels.

The one post-processing path for every backend (PyTorch, ONNX Runtime, TensorRT) and for
training's validation: ``multiclass_nms`` per image, then the letterbox undone.
"""

from __future__ import annotations

import numpy as np

from attn_deploy.data.letterbox import Letterbox, scale_boxes
from attn_deploy.exporter.nms import NmsOptions
from attn_deploy.parity.nms import Detections, multiclass_nms

SHIP_NMS = NmsOptions(topk=100, iou_thres=0.45, conf_thres=0.25)  # what a deployed detector keeps
MAP_NMS = NmsOptions(topk=300, iou_thres=0.6, conf_thres=0.001)  # YOLOv5 val.py's mAP settings


def postprocess(pred: np.ndarray, placements: list[Letterbox], opts: NmsOptions) -> list[Detections]:
    """``pred`` (N, boxes, 5 + nc), decoded; one Detections per placement (padding rows of a
    fixed-batch input, beyond ``len(placements)``, are ignored)."""
    out = []
    for p, placed in zip(pred, placements):
        d = multiclass_nms(np.asarray(p, np.float32), opts.iou_thres, opts.conf_thres, opts.topk)
        out.append(Detections(scale_boxes(d.boxes, placed), d.scores, d.classes))
    return out
