"""What ``calib`` and ``qat`` hand back and write: the options, the result (scores, damage,
coverage, the gate), the stage clock, and the graph with its sidecar, chart and cache written
all or none."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from attn_deploy.calib.coverage import Coverage
from attn_deploy.calib.evaluate import Score
from attn_deploy.calib.rank import LayerError
from attn_deploy.calib.search import Decision, Sensitivity
from attn_deploy.exporter.layers import LayerRow, find_boundaries
from attn_deploy.files import all_or_nothing, atomic_write, to_json

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CalibOptions:
    """``calib``'s options: ``precision`` int8 or fp16; ``data`` the calibration images (a folder,
    or a data.yaml's train split) and ``images`` how many; ``method`` max or entropy; ``exclude``
    auto (measure), none, or node-name patterns; ``val`` the validation images (default: the
    data.yaml's val split); ``max_map_drop`` the budget (mAP50-95 points, disagreement % without
    labels); ``output`` (default FILE.int8.onnx / FILE.fp16.onnx); ``cache`` a TensorRT
    calibration cache to write too."""

    precision: str = "int8"
    data: str | Path | None = None
    images: int = 64
    method: str = "max"  # or "entropy", or "best": per layer, whichever of the two its local error prefers
    exclude: tuple[str, ...] = ("auto",)
    val: str | Path | None = None
    max_map_drop: float = 0.5
    output: str | Path | None = None
    cache: str | Path | None = None
    # validation images that score a trial (the final graph: all of them); None: the first half,
    # at most 100 (at 128 images, 100 would cost a trial almost a whole scoring)
    search_images: int | None = None
    search: str = "ranked"  # or "measured", the earlier search (every trial calibrated anew)
    rank_images: int = 8  # calibration images that per-block parity ranks the layers on
    min_int8: float = 0.8  # INT8: the share of the model's MACs that must run in INT8 (coverage.py)


@dataclass
class CalibResult:
    output: Path
    precision: str
    method: str | None
    calibration: str
    images: int
    val: str
    budget: float
    reference: Score
    counts: dict[str, int]  # images asked for and used: calibration, validation
    final: Score
    damage: float
    naive: Score | None = None
    kept: list[str] = field(default_factory=list)
    sensitivity: list[Sensitivity] = field(default_factory=list)
    widened: list[Sensitivity] = field(default_factory=list)  # other layers, ranked on a subset
    decision: Decision | None = None
    lint_passed: bool = True
    chart: Path | None = None
    cache: Path | None = None
    ranking: list[LayerError] = field(default_factory=list)  # the ranked search's layer order
    search: str | None = None
    search_images: int | None = None
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage
    trials: int = 0  # graphs scored besides the float32 reference and the naive graph
    coverage: Coverage | None = None  # INT8: the share of MACs in INT8 (None for FP16)
    min_int8: float = 0.0
    entropy_layers: list[int] | None = None  # --method best: the layers on entropy's scales (the rest: max's)
    checkpoint: Path | None = None  # qat: our checkpoint of the fine-tuned quantized model
    selection: dict[str, Any] | None = None  # qat: the epoch kept, by its damage on held-out train images

    @property
    def int8_enough(self) -> bool:
        """Whether an INT8 graph is INT8 enough to be called so (always for FP16)."""
        return self.coverage is None or self.coverage.share >= self.min_int8

    @property
    def passed(self) -> bool:
        return self.damage <= self.budget and self.lint_passed and self.int8_enough

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        out = [] if self.damage <= self.budget else [f"damage {self.damage:.2f} > budget {self.budget:g}"]
        if not self.int8_enough and self.coverage is not None:
            layers = f"{len(self.kept)} of {len(self.ranking)} ranked layers" if self.ranking else f"{len(self.kept)} group(s)"
            out.append(f"keeping {layers} out of INT8 leaves {self.coverage.share:.0%} of the MACs in INT8 "
                       f"(--min-int8 {self.min_int8:.0%}): not an INT8 model, nothing written; try --qat, more "
                       "calibration images or a wider --max-map-drop")
        return out + ([] if self.lint_passed else ["the output fails lint"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "output": str(self.output), "precision": self.precision, "method": self.method,
            "calibration": {"source": self.calibration, "images": self.images,
                            "images_requested": self.counts["calibration_requested"]},
            "val": self.val, "val_images": self.counts["val"], "val_images_requested": self.counts["val_requested"],
            "budget": self.budget, "damage": self.damage, "reference": self.reference.to_dict(),
            "final": self.final.to_dict(), "naive": self.naive.to_dict() if self.naive else None,
            "excluded_groups": self.kept, "sensitivity": [s.to_dict() for s in self.sensitivity],
            "sensitivity_other_layers": [s.to_dict() for s in self.widened],
            "decision": self.decision.to_dict() if self.decision else None, "lint_passed": self.lint_passed,
            "chart": str(self.chart) if self.chart else None, "cache": str(self.cache) if self.cache else None,
            "search": self.search, "search_images": self.search_images, "trials": self.trials,
            "ranking": [e.to_dict() for e in self.ranking], "stages": {k: round(v, 2) for k, v in self.stages.items()},
            "coverage": self.coverage.to_dict() if self.coverage is not None else None, "min_int8": self.min_int8,
            "entropy_layers": self.entropy_layers, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "qat_selection": self.selection,
        }


class Stages:
    """Seconds per stage of a run, in the order they ran (the sidecar's ``stages``)."""

    def __init__(self, progress: Progress) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        done = ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
        self.progress(f"{what}  [{self.elapsed():.0f} s{': ' + done if done else ''}]")
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _layers(data: bytes, layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layer boundaries found again in the new graph (the tensors before its Q/DQ and
    Casts); a source sidecar without boundaries, or a graph where one is unclear, keeps the
    rows without tensors (``parity --per-block`` then says so)."""
    try:
        rows = [LayerRow.from_dict(d) for d in layers]
        return [b.to_dict() for b in find_boundaries(onnx.load_from_string(data), rows)]
    except (KeyError, TypeError, ValueError):
        return [{k: v for k, v in d.items() if k not in ("output", "inputs")} for d in layers]


def write_result(src: Path, data: bytes, result: CalibResult, sidecar: dict[str, Any] | None,
                 cache: str | Path | None = None) -> CalibResult:
    """The graph, its sidecar (the source's, its layers found again, ``precision`` added),
    chart and cache, all or none; nothing under an INT8 name when the graph is not INT8 enough."""
    from attn_deploy.exporter import lint_onnx
    from attn_deploy.files import sha256

    out = result.output
    if not result.int8_enough:  # INT8 in name only: nothing is written under an INT8 name
        return result
    with all_or_nothing() as written:  # the graph, its chart, cache and sidecar: all, or none left
        written.append(atomic_write(out, data))
        result.lint_passed = lint_onnx(out).passed
        if result.sensitivity or result.ranking:
            from attn_deploy.calib.chart import sensitivity_chart

            result.chart = sensitivity_chart(result, out.with_name(out.stem + ".sensitivity.png"))
            written.append(result.chart)
        if cache and result.precision == "int8":
            from attn_deploy.calib.cache import activation_scales, write_cache

            result.cache = write_cache(activation_scales(onnx.load_from_string(data)), cache)
            written.append(result.cache)
        doc = dict(sidecar or {})
        if doc.get("layers"):
            doc["layers"] = _layers(data, doc["layers"])
        doc["onnx"] = {"file": out.name, "sha256": sha256(data), "bytes": len(data), "from": src.name}
        doc["precision"] = result.to_dict()
        written.append(atomic_write(out.with_suffix(".json"), to_json(doc).encode()))
    return result
