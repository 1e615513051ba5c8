"""Scoring a candidate ONNX against the float32 one on a validation set, in ONNX Runtime.

The validation images are letterboxed once (the parity loader) and kept; each candidate is
scored by mAP50-95 from pycocotools when labels exist, and always by detection agreement with
the float32 model's detections (the same NMS and matcher as ``parity``). Damage is measured in
mAP50-95 points when labelled, else as (1 - agreement) x 100.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy import layouts
from attn_deploy.data import Batch, ImageLoader, load_data
from attn_deploy.engines import OnnxrtRunner
from attn_deploy.errors import UserError
from attn_deploy.parity.coco import CocoEvaluator
from attn_deploy.parity.match import Agreement
from attn_deploy.parity.nms import Detections
from attn_deploy.parity.postprocess import MAP_NMS, SHIP_NMS, postprocess


@dataclass(frozen=True)
class Score:
    map50: float | None
    map50_95: float | None
    agreement: float

    def damage(self, reference: Score) -> float:
        """How much worse than the reference: mAP50-95 points, or disagreement in percent."""
        if self.map50_95 is not None and reference.map50_95 is not None:
            return (reference.map50_95 - self.map50_95) * 100
        return (1 - self.agreement) * 100

    def to_dict(self) -> dict[str, Any]:
        return {"map50": self.map50, "map50_95": self.map50_95, "agreement": self.agreement}


class Evaluator:
    def __init__(self, data: str | Path, imgsz: tuple[int, int], batch: int, max_images: int | None,
                 layout: str = layouts.YOLOV5) -> None:
        self.layout = layout  # of output0, from the export sidecar
        source = load_data(data)
        self.labelled, self.nc = source.labelled, len(source.names or [])
        self.batch = batch
        loader = ImageLoader(source, imgsz, batch, "skip", max_images)
        self.batches: list[Batch] = list(loader)
        self.images, self.requested = sum(len(b) for b in self.batches), len(loader)
        self.reference: list[Detections] = []
        self.reference_score: Score | None = None
        self.reference_model: bytes | str | Path | None = None

    def set_reference(self, model: bytes | str | Path) -> Score:
        self.reference, self.reference_model = [], model
        self.reference_score = self.score(model, keep=True)
        return self.reference_score

    def first(self, count: int) -> Evaluator:
        """An evaluator of the first ``count`` images (whole batches), the same letterboxed
        arrays, scored against the same float32 model (run again on them for its mAP)."""
        sub = copy.copy(self)
        kept, n = [], 0
        for b in self.batches:
            if n >= count:
                break
            kept.append(b)
            n += len(b)
        sub.batches, sub.images, sub.requested = kept, n, n
        sub.set_reference(self.reference_model)
        return sub

    def score(self, model: bytes | str | Path, keep: bool = False) -> Score:
        agreement = Agreement()
        ev = CocoEvaluator(self.nc) if self.labelled else None
        k = 0
        with OnnxrtRunner(model) as run:
            name = run.input_names()[0]
            for b in self.batches:
                pred = run.run({name: b.padded(self.batch)})["output0"][: len(b)]
                for i, det in enumerate(postprocess(pred, b.placements, SHIP_NMS, self.layout)):
                    if keep:
                        self.reference.append(det)
                    agreement.add(self.reference[k + i], det)
                if ev is not None:
                    dets = postprocess(pred, b.placements, MAP_NMS, self.layout)
                    for placed, labels, det in zip(b.placements, b.labels, dets):
                        ev.add(placed.shape, labels, det)
                k += len(b)
        m = ev.evaluate() if ev is not None else None
        return Score(m.map50 if m else None, m.map50_95 if m else None, agreement.agreement)


def calibration_images(data: str | Path, imgsz: tuple[int, int], count: int) -> tuple[np.ndarray, str]:
    """The first ``count`` readable images of a folder, or of a data.yaml's train split (its
    val split when train is empty), letterboxed exactly as inference sees them:
    (N, 3, H, W) float32, and where they came from."""
    path = Path(data)
    try:
        source = load_data(path, "train") if path.suffix.lower() in (".yaml", ".yml") else load_data(path)
    except UserError:
        source = load_data(path, "val")
    images = [b.images for b in ImageLoader(source, imgsz, 16, "skip", count)]
    if not images:
        raise UserError(f"no readable calibration images in {source.origin}")
    return np.concatenate(images), source.origin
