"""From a decoded model output to detections in each original image's pixels.

The one post-processing path for every backend (PyTorch, ONNX Runtime, TensorRT) and for
training's validation: ``multiclass_nms`` per image (an end-to-end output is already a ranked
list: its rows above the score threshold, best first), then the letterbox undone.
"""

from __future__ import annotations

import numpy as np

from attn_deploy import layouts
from attn_deploy.data.letterbox import Letterbox, scale_boxes
from attn_deploy.exporter.nms import NmsOptions
from attn_deploy.parity.nms import Detections, multiclass_nms

SHIP_NMS = NmsOptions(topk=100, iou_thres=0.45, conf_thres=0.25)  # what a deployed detector keeps
MAP_NMS = NmsOptions(topk=300, iou_thres=0.6, conf_thres=0.001)  # YOLOv5 val.py's mAP settings


def postprocess(
    pred: np.ndarray, placements: list[Letterbox], opts: NmsOptions, layout: str = layouts.YOLOV5
) -> list[Detections]:
    """``pred``, a decoded output in ``layout`` (``layouts.py``); one Detections per placement
    (padding rows of a fixed-batch input, beyond ``len(placements)``, are ignored)."""
    out = []
    rows = pred if layout == layouts.END2END else layouts.as_rows(np.asarray(pred), layout)
    for p, placed in zip(rows, placements):
        p = np.asarray(p, np.float32)
        d = ranked(p, opts) if layout == layouts.END2END else multiclass_nms(p, opts.iou_thres, opts.conf_thres, opts.topk)
        out.append(Detections(scale_boxes(d.boxes, placed), d.scores, d.classes))
    return out


def ranked(rows: np.ndarray, opts: NmsOptions) -> Detections:
    """One image's end-to-end (K, 6) rows: those scored above the threshold, best first, at most topk."""
    keep = np.nonzero(rows[:, 4] > opts.conf_thres)[0]
    keep = keep[np.argsort(-rows[keep, 4], kind="stable")][: opts.topk]
    return Detections(rows[keep, :4], rows[keep, 4], rows[keep, 5].round().astype(np.int64))
