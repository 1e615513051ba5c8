"""Tensor-level parity: how far a candidate's outputs are from the reference's.

Decoded YOLO outputs mix two scales in one tensor: xywh in pixels (hundreds) and
probabilities in [0, 1]. They are judged apart, each with its own tolerance; one atol for
both would be either meaningless for boxes or blind for scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerances:
    """An element passes when |candidate - reference| <= atol + rtol * |reference|."""

    box_atol: float = 1e-3  # pixels
    box_rtol: float = 1e-5
    score_atol: float = 1e-4  # probability
    score_rtol: float = 0.0


@dataclass
class TensorStats:
    name: str
    max_abs: float
    max_rel: float  # max abs error over the reference's max abs (scale-relative)
    cosine: float
    atol: float
    rtol: float
    worst: float  # max of |diff| / (atol + rtol |ref|): <= 1 passes
    count: int = 0

    @property
    def passed(self) -> bool:
        return self.worst <= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def compare(name: str, ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float) -> TensorStats:
    if ref.shape != cand.shape:
        return TensorStats(name, float("inf"), float("inf"), 0.0, atol, rtol, float("inf"), ref.size)
    r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    diff = np.abs(r - c)
    scale = float(np.abs(r).max()) if r.size else 0.0
    norm = float(np.linalg.norm(r) * np.linalg.norm(c))
    cosine = float(r @ c / norm) if norm > 0 else float(np.array_equal(r, c))
    allowed = atol + rtol * np.abs(r)
    worst = float((diff / np.maximum(allowed, np.finfo(np.float64).tiny)).max()) if r.size else 0.0
    if not np.isfinite(c).all() or not np.isfinite(r).all():
        worst = float("inf")
    return TensorStats(
        name, float(diff.max()) if r.size else 0.0, float(diff.max() / scale) if scale else 0.0,
        cosine, atol, rtol, worst, r.size,
    )


def merge(stats: list[TensorStats]) -> TensorStats:
    """One figure over several cases: the worst error, the lowest cosine."""
    first = stats[0]
    return TensorStats(
        first.name, max(s.max_abs for s in stats), max(s.max_rel for s in stats),
        min(s.cosine for s in stats), first.atol, first.rtol, max(s.worst for s in stats),
        sum(s.count for s in stats),
    )


def compare_detections_tensor(
    name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerances
) -> list[TensorStats]:
    """A decoded (N, boxes, 5 + nc) output: xywh in pixels apart from objectness and classes."""
    return [
        compare(f"{name}.boxes", ref[..., :4], cand[..., :4], tol.box_atol, tol.box_rtol),
        compare(f"{name}.scores", ref[..., 4:], cand[..., 4:], tol.score_atol, tol.score_rtol),
    ]


@dataclass
class TensorParity:
    """Parity over several input cases; truthy when every output part is within tolerance."""

    cases: list[list[int]]
    stats: list[TensorStats] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)  # extra named checks (e.g. NMS)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stats) and all(self.checks.values())

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "cases": self.cases,
            "outputs": {s.name: s.to_dict() for s in self.stats}, "checks": self.checks,
        }

    def failures(self) -> list[str]:
        out = [
            f"{s.name}: max abs {s.max_abs:.3g} exceeds {s.atol:g} + {s.rtol:g}*|ref| by {s.worst:.3g}x"
            for s in self.stats if not s.passed
        ]
        return out + [f"{k} failed" for k, ok in self.checks.items() if not ok]
