"""Tensor-level parity: how far a candidate's outputs are from the reference's.

Decoded YOLO outputs mix two scales in one tensor: xywh in pixels (hundreds) and
probabilities in [0, 1]. They are judged apart, each with its own tolerance; one atol for
both would be either meaningless for boxes or blind for scores.

A fixed tolerance cannot serve every model: float32 error grows with the activations a
network computes, its depth and its box scale (a trained yolov5 v7.0 checkpoint shows
0.025-0.06 px between two correct float32 evaluations). So ``export`` measures the float32
noise of the model itself (``Noise``: PyTorch float32 against float64 on one input) and
allows a candidate a fixed multiple of it; ``Tolerances`` is the floor under that.
"""

from __future__ import annotations

import math
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


# How many times the model's own float32 noise a second float32 runtime may differ by.
# Measured (benchmarks/parity_noise.py, docs/howto/export.md), 640x640: ONNX Runtime against
# PyTorch float32 over 3 images is 0.9-2.6x (boxes) and 1.1-3.1x (scores) the noise PyTorch
# float32 shows against float64 on one image, over yolov5n-x with random init and with
# BatchNorm statistics from images (activations of a trained model's size), -ca/-cbam, and
# the trained demo models; 16 leaves 5x above the worst, while a graph with one damaged head
# weight row is 830-5.7e6x the noise (52-1e4x the tolerance).
NOISE_FACTOR = 16.0
# Beyond these, float32 itself is not a faithful evaluation of the model (it overflows).
MAX_SCORE_NOISE = 1e-2  # probability
MAX_BOX_NOISE = 1e-2  # of the image's larger side


@dataclass(frozen=True)
class Noise:
    """The float32 noise of one model on one input: max |PyTorch float32 - float64| per part.

    A second float32 runtime (ONNX Runtime, TensorRT FP32) rounds differently but no worse,
    so its distance from PyTorch float32 is a small multiple of this; anything far beyond is
    a wrong graph, not arithmetic.
    """

    box: float  # pixels
    score: float  # probability
    case: tuple[int, ...] = ()
    factor: float = NOISE_FACTOR

    def sane(self) -> bool:
        """Whether float32 is a faithful evaluation of this model at all: finite noise, scores
        within ``MAX_SCORE_NOISE`` and boxes within ``MAX_BOX_NOISE`` of the image size. A model
        that overflows in float32 (noise 1.0 on scores) would make ``factor`` times its noise
        a tolerance that passes anything, so it fails the check instead."""
        size = max(self.case[2:], default=0)
        return (math.isfinite(self.box) and math.isfinite(self.score) and self.score <= MAX_SCORE_NOISE
                and (not size or self.box <= MAX_BOX_NOISE * size))

    def of(self, name: str) -> float:
        """The noise of the output part ``name`` (``output0.boxes``, ``det_scores``, ...)."""
        return self.box if name.endswith("boxes") else self.score

    def tolerances(self, floor: Tolerances = Tolerances()) -> Tolerances:
        """``factor`` times the noise, never below ``floor`` (which keeps its rtol terms)."""
        return Tolerances(
            box_atol=max(floor.box_atol, self.factor * self.box), box_rtol=floor.box_rtol,
            score_atol=max(floor.score_atol, self.factor * self.score), score_rtol=floor.score_rtol,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"boxes": self.box, "scores": self.score, "case": list(self.case), "factor": self.factor,
                "measured": "max abs, PyTorch float32 vs float64"}


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
    noise: float | None = None  # this part's float32 noise (``Noise``), when measured

    @property
    def passed(self) -> bool:
        return self.worst <= 1.0

    @property
    def noise_ratio(self) -> float | None:
        """How many times the float32 noise the largest error is (None when not measured)."""
        return self.max_abs / self.noise if self.noise else None

    def failure(self) -> str:
        """One line that says how far beyond tolerance, and beyond noise, this part is."""
        unit = " px" if self.name.endswith("boxes") else ""
        if not self.noise_ratio:
            return (f"{self.name}: max abs {self.max_abs:.3g}{unit} exceeds {self.atol:g} + {self.rtol:g}*|ref| "
                    f"by {self.worst:.3g}x")
        return (f"{self.name}: max abs {self.max_abs:.3g}{unit} is {self.noise_ratio:.3g}x the float32 noise "
                f"of this model ({self.noise:.2g}{unit}, PyTorch float32 vs float64); "
                f"allowed {self.atol / self.noise:.3g}x "
                f"({self.atol:.3g}{unit} + {self.rtol:g}*|ref|)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noise_ratio": self.noise_ratio, "passed": self.passed}


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
        sum(s.count for s in stats), first.noise,
    )


def compare_detections_tensor(
    name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerances, noise: Noise | None = None
) -> list[TensorStats]:
    """A decoded (N, boxes, 5 + nc) output: xywh in pixels apart from objectness and classes."""
    return [
        compare_part(f"{name}.boxes", ref[..., :4], cand[..., :4], tol, noise),
        compare_part(f"{name}.scores", ref[..., 4:], cand[..., 4:], tol, noise),
    ]


def compare_part(
    name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerances, noise: Noise | None = None
) -> TensorStats:
    """``compare`` with the box or score tolerance, by the part's name, and its noise attached."""
    boxes = name.endswith("boxes")
    atol, rtol = (tol.box_atol, tol.box_rtol) if boxes else (tol.score_atol, tol.score_rtol)
    s = compare(name, ref, cand, atol, rtol)
    s.noise = noise.of(name) if noise is not None else None
    return s


@dataclass
class TensorParity:
    """Parity over several input cases; truthy when every output part is within tolerance."""

    cases: list[list[int]]
    stats: list[TensorStats] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)  # extra named checks (e.g. NMS)
    noise: Noise | None = None  # the model's float32 noise the tolerances came from

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stats) and all(self.checks.values())

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "cases": self.cases,
            "outputs": {s.name: s.to_dict() for s in self.stats}, "checks": self.checks,
            "noise": self.noise.to_dict() if self.noise is not None else None,
        }

    def failures(self) -> list[str]:
        out = [s.failure() for s in self.stats if not s.passed]
        return out + [f"{k} failed" for k, ok in self.checks.items() if not ok]
