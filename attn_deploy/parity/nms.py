"""Non-maximum suppression in numpy: one implementation for every backend's outputs.

``multiclass_nms`` is the semantics of ONNX's NonMaxSuppression as the end-to-end graph uses
it: boxes scored per class (objectness x class probability), greedy suppression per class
at IoU > iou_thres among scores > conf_thres, at most ``topk`` per class, then the ``topk``
best over all classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    xy, half = b[..., :2], b[..., 2:4] / 2
    return np.concatenate((xy - half, xy + half), -1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) with every box in b (m, 4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, limit: int | None = None) -> np.ndarray:
    """Indices kept, best first: each box suppresses later ones that overlap it by > iou_thres."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and (limit is None or len(keep) < limit):
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        ious = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Detections:
    """One image's detections, best first: xyxy boxes in pixels, scores, class ids."""

    boxes: np.ndarray  # (n, 4)
    scores: np.ndarray  # (n,)
    classes: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.scores)


def multiclass_nms(pred: np.ndarray, iou_thres: float, conf_thres: float, topk: int) -> Detections:
    """One image's decoded YOLOv5 output (boxes, 5 + nc) -> its detections."""
    boxes = xywh_to_xyxy(pred[:, :4])
    scores = pred[:, 4:5] * pred[:, 5:]
    found_b, found_s, found_c = [], [], []
    for c in range(scores.shape[1]):
        cand = np.nonzero(scores[:, c] > conf_thres)[0]
        keep = cand[greedy_nms(boxes[cand], scores[cand, c], iou_thres, limit=topk)]
        found_b.append(boxes[keep])
        found_s.append(scores[keep, c])
        found_c.append(np.full(len(keep), c, dtype=np.int64))
    b, s, c = np.concatenate(found_b), np.concatenate(found_s), np.concatenate(found_c)
    best = np.argsort(-s, kind="stable")[:topk]
    return Detections(b[best], s[best], c[best])
