"""The layouts of a detector's ``output0``, by name, and the one conversion every check uses.

- ``xywh_obj_cls``: YOLOv5, (N, anchors, 5 + nc): box centre and size in input pixels,
  objectness, class probabilities.
- ``xywh_cls``: ultralytics' anchor-free heads (YOLOv8/11/12/26), (N, 4 + nc, anchors): box
  centre and size in input pixels, then class probabilities; no objectness.
- ``xyxy_score_cls``: YOLO26's one-to-one head with its top-k, (N, max_det, 6): corners in input
  pixels, score, class id; best first, no NMS needed.
- ``nms``: the four end-to-end outputs ``--nms`` appends (``exporter/nms.py``).

The sidecar records the layout (``output_layout``), so later verbs need no flag. NMS, matching
and mAP work on rows of (xywh, obj, classes): ``as_rows`` brings the first two layouts there
(objectness 1 for anchor-free heads, whose class probabilities are the scores).
"""

from __future__ import annotations

import numpy as np

YOLOV5 = "xywh_obj_cls"
ANCHOR_FREE = "xywh_cls"
END2END = "xyxy_score_cls"
NMS = "nms"
RAW = (YOLOV5, ANCHOR_FREE)  # decoded per-anchor outputs that still need NMS


def as_rows(pred: np.ndarray, layout: str) -> np.ndarray:
    """A decoded (N, ...) output of ``layout`` as (N, anchors, 5 + nc) rows."""
    if layout == YOLOV5:
        return pred
    if layout == ANCHOR_FREE:
        rows = np.swapaxes(pred, 1, 2)
        return np.concatenate((rows[..., :4], np.ones_like(rows[..., :1]), rows[..., 4:]), axis=-1)
    raise ValueError(f"no per-anchor rows in a {layout!r} output")


def anchors_axis(layout: str) -> int:
    """The axis of ``output0`` that grows with the input size."""
    return 2 if layout == ANCHOR_FREE else 1
