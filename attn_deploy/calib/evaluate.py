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


FOLDS = 8  # jackknife folds of the validation images: image i is in fold i % FOLDS


@dataclass(frozen=True)
class Score:
    map50: float | None
    map50_95: float | None
    agreement: float
    folds: tuple[float, ...] = ()  # the damage figure (mAP50-95, or agreement) with each fold left out

    def damage(self, reference: Score) -> float:
        """How much worse than the reference: mAP50-95 points, or disagreement in percent."""
        if self.map50_95 is not None and reference.map50_95 is not None:
            return (reference.map50_95 - self.map50_95) * 100
        return (1 - self.agreement) * 100

    def damage_error(self, reference: Score) -> float:
        """The standard error of ``damage`` on these images, by a jackknife over the folds of the
        paired difference (the same images on both sides): how far the damage on all images
        could plausibly lie from this one."""
        k = min(len(self.folds), len(reference.folds))
        if k < 2:
            return 0.0
        if self.map50_95 is not None and reference.map50_95 is not None:
            d = [(r - c) * 100 for r, c in zip(reference.folds, self.folds)]
        else:
            d = [(1 - c) * 100 for c in self.folds]
        mean = sum(d) / k
        return ((k - 1) / k * sum((x - mean) ** 2 for x in d)) ** 0.5

    def to_dict(self) -> dict[str, Any]:
        return {"map50": self.map50, "map50_95": self.map50_95, "agreement": self.agreement}


class Evaluator:
    def __init__(self, data: str | Path, imgsz: tuple[int, int], batch: int, max_images: int | None,
                 layout: str = layouts.YOLOV5, split: str = "val") -> None:
        self.layout = layout  # of output0, from the export sidecar
        source = load_data(data, split)
        self.labelled, self.nc = source.labelled, len(source.names or [])
        self.batch = batch
        loader = ImageLoader(source, imgsz, batch, "skip", max_images)
        self.batches: list[Batch] = list(loader)
        self.images, self.requested = sum(len(b) for b in self.batches), len(loader)
        self.reference: list[Detections] = []  # the float32 model's, as shipped (agreement)
        self.reference_map: list[Detections] = []  # and at mAP settings
        self.reference_score: Score | None = None
        self.reference_model: bytes | str | Path | None = None

    def set_reference(self, model: bytes | str | Path) -> Score:
        self.reference_model = model
        self.reference, self.reference_map = self.detect(model)
        self.reference_score = self.judge(self.reference, self.reference_map)
        return self.reference_score

    def first(self, count: int) -> Evaluator:
        """An evaluator of the first ``count`` images (whole batches), the same letterboxed
        arrays, against the same float32 detections (no model run)."""
        sub = copy.copy(self)
        kept, n = [], 0
        for b in self.batches:
            if n >= count:
                break
            kept.append(b)
            n += len(b)
        sub.batches, sub.images, sub.requested = kept, n, n
        sub.reference, sub.reference_map = self.reference[:n], self.reference_map[:n]
        sub.reference_score = sub.judge(sub.reference, sub.reference_map)
        return sub

    def detect(self, model: bytes | str | Path) -> tuple[list[Detections], list[Detections]]:
        """``model``'s detections on every image, as shipped and at mAP settings (one ONNX Runtime pass)."""
        shipped: list[Detections] = []
        at_map: list[Detections] = []
        with OnnxrtRunner(model) as run:
            name = run.input_names()[0]
            for b in self.batches:
                pred = run.run({name: b.padded(self.batch)})["output0"][: len(b)]
                shipped += postprocess(pred, b.placements, SHIP_NMS, self.layout)
                if self.labelled:
                    at_map += postprocess(pred, b.placements, MAP_NMS, self.layout)
        return shipped, at_map

    def judge(self, shipped: list[Detections], at_map: list[Detections]) -> Score:
        """Agreement with the float32 detections and mAP from the labels, each also per fold left out."""
        agreement, per_fold = Agreement(), [[0, 0] for _ in range(FOLDS)]  # matched, compared
        for k, (ref, det) in enumerate(zip(self.reference, shipped)):
            m = agreement.add(ref, det)
            per_fold[k % FOLDS][0] += len(m.pairs)
            per_fold[k % FOLDS][1] += len(m.pairs) + len(m.missed) + len(m.extra)
        if not self.labelled:
            rest = [(agreement.matched - matched, agreement.compared - compared) for matched, compared in per_fold]
            return Score(None, None, agreement.agreement, tuple(m / c if c else 1.0 for m, c in rest))
        ev = CocoEvaluator(self.nc)
        labels = [lab for b in self.batches for lab in b.labels]
        shapes = [p.shape for b in self.batches for p in b.placements]
        for shape, lab, det in zip(shapes, labels, at_map):
            ev.add(shape, lab, det)
        m = ev.evaluate(FOLDS)
        return Score(m.map50, m.map50_95, agreement.agreement, m.folds)

    def score(self, model: bytes | str | Path) -> Score:
        return self.judge(*self.detect(model))


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
