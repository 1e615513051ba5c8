"""Detection-level agreement: which candidate detection is which reference detection.

A candidate detection matches a reference detection when both have the same class and their
boxes overlap by IoU >= ``iou_thres`` (0.9 by default: the same object, boxed the same way).
Matching is greedy, reference detections in descending score, each taking the unmatched
candidate of its class that overlaps it most. What is left over is missed (reference only)
or extra (candidate only). Agreement is matched / (matched + missed + extra): 1 when both
sides found exactly the same objects, lower for every disagreement on either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attn_deploy.parity.nms import Detections, box_iou


@dataclass
class Match:
    pairs: list[tuple[int, int]]  # (reference index, candidate index)
    missed: list[int]  # reference indices without a partner
    extra: list[int]  # candidate indices without a partner


def match_detections(ref: Detections, cand: Detections, iou_thres: float = 0.9) -> Match:
    iou = box_iou(ref.boxes, cand.boxes) if len(ref) and len(cand) else np.zeros((len(ref), len(cand)))
    iou = np.where(ref.classes[:, None] == cand.classes[None, :], iou, -1.0)
    free = np.ones(len(cand), bool)
    pairs, missed = [], []
    for i in np.argsort(-ref.scores, kind="stable"):
        row = np.where(free, iou[i], -1.0)
        j = int(row.argmax()) if len(cand) else -1
        if j >= 0 and row[j] >= iou_thres:
            pairs.append((int(i), j))
            free[j] = False
        else:
            missed.append(int(i))
    return Match(pairs, sorted(missed), [int(j) for j in np.nonzero(free)[0]])


@dataclass
class Agreement:
    """Detection agreement accumulated over images, with the errors of matched pairs."""

    iou_thres: float = 0.9
    matched: int = 0
    missed: int = 0
    extra: int = 0
    box_errors: list[float] = field(default_factory=list)  # per pair: max |corner difference|, pixels
    score_errors: list[float] = field(default_factory=list)  # per pair: |score difference|

    def add(self, ref: Detections, cand: Detections) -> Match:
        m = match_detections(ref, cand, self.iou_thres)
        self.matched += len(m.pairs)
        self.missed += len(m.missed)
        self.extra += len(m.extra)
        for i, j in m.pairs:
            self.box_errors.append(float(np.abs(ref.boxes[i] - cand.boxes[j]).max()))
            self.score_errors.append(float(abs(ref.scores[i] - cand.scores[j])))
        return m

    @property
    def compared(self) -> int:
        """Detections on either side: matched pairs, missed and extra ones."""
        return self.matched + self.missed + self.extra

    @property
    def agreement(self) -> float:
        return self.matched / self.compared if self.compared else 1.0

    def to_dict(self) -> dict[str, Any]:  # no agreement is shown that nothing was compared for
        return {"agreement": self.agreement if self.compared else None, "matched": self.matched, "missed": self.missed, "extra": self.extra,
                "iou_thres": self.iou_thres, "box_error_px": _summary(self.box_errors),
                "score_error": _summary(self.score_errors)}


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    v = np.asarray(values)
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "max": float(v.max())}
