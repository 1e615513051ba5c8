"""mAP50 and mAP50-95 by pycocotools' COCOeval: the evaluator everyone's numbers come from.

We only translate: YOLO labels (normalised xywh of the original image) and detections (xyxy
pixels of the original image) into COCO's json structures, in memory.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attn_deploy.parity.nms import Detections


@dataclass(frozen=True)
class MapResult:
    map50: float
    map50_95: float
    images: int
    labels: int
    folds: tuple[float, ...] = ()  # mAP50-95 with each fold of images left out (jackknife), when asked

    def to_dict(self) -> dict[str, Any]:
        return {"map50": self.map50, "map50_95": self.map50_95, "images": self.images, "labels": self.labels}


@dataclass
class CocoEvaluator:
    """Collects ground truth and one model's detections, image by image, then evaluates."""

    nc: int
    images: list[dict[str, Any]] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)
    found: list[dict[str, Any]] = field(default_factory=list)

    def add(self, shape: tuple[int, int], labels: np.ndarray, dets: Detections) -> None:
        """One image: its (h, w), its YOLO labels (n, 5), its detections in its own pixels."""
        h, w = shape
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "height": h, "width": w})
        for cls, x, y, bw, bh in labels.tolist():
            box = [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h]
            self.truth.append({"id": len(self.truth) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                               "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for (x0, y0, x1, y1), score, cls in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist()):
            self.found.append({"image_id": image_id, "category_id": int(cls) + 1,
                               "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})

    def evaluate(self, folds: int = 0) -> MapResult:
        """mAP50 and mAP50-95; with ``folds``, also mAP50-95 with each fold of images left out
        (image i in fold i % folds), from the same per-image matching: what a jackknife of a
        difference between two models on the same images needs."""
        if not self.truth or not self.found:
            return MapResult(0.0, 0.0, len(self.images), len(self.truth), (0.0,) * folds)
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt = COCO()
            gt.dataset = {"images": self.images, "annotations": self.truth,
                          "categories": [{"id": c + 1, "name": str(c)} for c in range(self.nc)]}
            gt.createIndex()
            ev = COCOeval(gt, gt.loadRes(self.found), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            left_out = tuple(_map_without(ev, f, folds) for f in range(folds))
        return MapResult(float(ev.stats[1]), float(ev.stats[0]), len(self.images), len(self.truth), left_out)


def _map_without(ev: Any, fold: int, folds: int) -> float:
    """mAP50-95 over the images not in ``fold``: their per-image results accumulated again
    (COCOeval.accumulate skips an image whose entries are None), as summarize() reads it."""
    every = ev.evalImgs
    try:
        ev.evalImgs = [e if e is None or (e["image_id"] - 1) % folds != fold else None for e in every]
        ev.accumulate()
        precision = ev.eval["precision"][:, :, :, 0, -1]  # every IoU, recall, class; all areas, 100 detections
    finally:
        ev.evalImgs = every
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0
