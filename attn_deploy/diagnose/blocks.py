"""Per-block parity (``parity --per-block``): which yaml layer breaks a candidate, told apart
from what it inherits.

For every layer (``exporter/layers.py`` gives its output and input tensors) two errors against
PyTorch, on the same letterboxed images:

- accumulated: the candidate's layer output, run from the image, against PyTorch's; it holds
  everything that went wrong up to and including this layer;
- local: the layer alone (its subgraph cut out of the candidate) fed with PyTorch's own
  inputs to it; it holds only what this layer adds.

Both are judged relative to the layer's scale (max |error| over max |reference|): a gate is in
[0, 1], a C3 output wherever its activations are; the Detect output is judged as boxes
(pixels) and scores ([0, 1]) apart, the worse of the two speaking for it. The culprit is the
layer with the largest relative local error, when that exceeds the tolerance. Candidates are ONNX files (ONNX Runtime) or
TensorRT engines (``trt_blocks.py``): a backend only has to run the graph with the
boundaries as outputs, and one layer apart. ``run.py`` opens a candidate's backend and runs
it for the parity verb.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from attn_deploy import layouts
from attn_deploy.exporter.layers import LayerBoundary
from attn_deploy.models.heads import Detector, head_of

DEFAULT_TOLERANCE = 1e-2  # relative local error; FP32 graphs sit near 1e-6, FP16 near 1e-3


@dataclass
class ErrorStats:
    """max |cand - ref|, max |ref| and the cosine similarity, accumulated over batches."""

    max_abs: float = 0.0
    ref_max: float = 0.0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    nonfinite: int = 0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        if r.shape != c.shape:
            raise ValueError(f"shapes differ: reference {ref.shape}, candidate {cand.shape}")
        bad = ~np.isfinite(c)
        if bad.any():  # counted, and read as zero in the figures below
            self.nonfinite += int(bad.sum())
            c[bad] = 0.0
        self.max_abs = max(self.max_abs, float(np.abs(c - r).max(initial=0.0)))
        self.ref_max = max(self.ref_max, float(np.abs(r).max(initial=0.0)))
        self.dot += float(r @ c)
        self.ref_sq += float(r @ r)
        self.cand_sq += float(c @ c)

    @property
    def rel(self) -> float:
        if self.nonfinite:
            return float("inf")
        return self.max_abs / self.ref_max if self.ref_max > 0 else self.max_abs

    @property
    def cosine(self) -> float:
        if self.ref_sq == 0 and self.cand_sq == 0:
            return 1.0
        return self.dot / np.sqrt(self.ref_sq * self.cand_sq) if self.ref_sq and self.cand_sq else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {"max_abs": self.max_abs, "rel": self.rel, "cosine": float(self.cosine)}
        return {**out, "nonfinite": self.nonfinite} if self.nonfinite else out


@dataclass
class DetectStats:
    """The Detect output mixes units: xywh in pixels, (objectness and) class scores in [0, 1].
    Judged as one tensor, score errors would vanish under a pixel-sized reference; so boxes
    and scores are judged apart and the worse part speaks for the layer."""

    boxes: ErrorStats = field(default_factory=ErrorStats)
    scores: ErrorStats = field(default_factory=ErrorStats)
    layout: str = layouts.YOLOV5  # where the box and score channels are (layouts.py)

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        axis = 1 if self.layout == layouts.ANCHOR_FREE else ref.ndim - 1
        box, score = (slice(None),) * axis + (slice(0, 4),), (slice(None),) * axis + (slice(4, None),)
        self.boxes.add(ref[box], cand[box])
        self.scores.add(ref[score], cand[score])

    @property
    def max_abs(self) -> float:
        return max(self.boxes.max_abs, self.scores.max_abs)

    @property
    def rel(self) -> float:
        return max(self.boxes.rel, self.scores.rel)

    @property
    def cosine(self) -> float:
        return min(self.boxes.cosine, self.scores.cosine)

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "rel": self.rel, "cosine": float(self.cosine),
                "boxes": self.boxes.to_dict(), "scores": self.scores.to_dict()}


def stats_for(module: str, layout: str = layouts.YOLOV5) -> ErrorStats | DetectStats:
    return DetectStats(layout=layout) if module == "Detect" else ErrorStats()


@dataclass
class BlockRow:
    boundary: LayerBoundary
    accumulated: ErrorStats | DetectStats | None = field(default_factory=ErrorStats)  # None: not measured
    local: ErrorStats | DetectStats | None = field(default_factory=ErrorStats)
    note: str = ""  # why there is no local figure, where there is none

    def to_dict(self) -> dict[str, Any]:
        b = self.boundary
        return {"layer": b.index, "module": b.module, "attention": b.attention, "tensor": b.output,
                "accumulated": self.accumulated.to_dict() if self.accumulated else None, "local": self.local.to_dict() if self.local else None,
                **({"note": self.note} if self.note else {})}


@dataclass
class BlockReport:
    rows: list[BlockRow]
    tolerance: float = DEFAULT_TOLERANCE
    images: int = 0

    @property
    def culprit(self) -> int | None:
        judged = [r for r in self.rows if r.local is not None]
        if not judged:
            return None
        worst = max(judged, key=lambda r: r.local.rel)
        return worst.boundary.index if worst.local.rel > self.tolerance else None

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [r.to_dict() for r in self.rows], "culprit": self.culprit,
                "block_tolerance": self.tolerance, "block_images": self.images}


class BlockBackend(Protocol):
    """What a candidate must do for per-block parity."""

    def layer_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The whole graph from ``images``, returning every boundary tensor by name."""

    def layer_alone(self, boundary: LayerBoundary, inputs: list[np.ndarray]) -> np.ndarray | None:
        """The layer's subgraph alone on ``inputs``; None where it cannot be cut out."""

    def why_not(self, boundary: LayerBoundary) -> str:
        """Why ``layer_alone`` has no figure for this layer ("" when it has one)."""

    def close(self) -> None:
        """Release sessions and engines."""


def run_typed(runner: Any, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``runner`` on ``arrays`` in input order, each cast to its input's type (float16
    inside an FP16 graph); outputs come back as float32."""
    specs = runner.inputs()
    feed = {s.name: np.ascontiguousarray(a, dtype=s.dtype) for s, a in zip(specs, arrays)}
    return {k: np.asarray(v, dtype=np.float32) for k, v in runner.run(feed).items()}


class RunnerBlocks:
    """A ``BlockBackend`` from runners: ``whole`` outputs every boundary, ``parts[i]`` is
    layer i alone, ``failed[i]`` says why a layer has no part. Subclasses build them."""

    def __init__(self) -> None:
        self.whole: Any = None
        self.parts: dict[int, Any] = {}
        self.failed: dict[int, str] = {}

    def why_not(self, boundary: LayerBoundary) -> str:
        return self.failed.get(boundary.index, "")

    def layer_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return run_typed(self.whole, [images])

    def layer_alone(self, boundary: LayerBoundary, inputs: list[np.ndarray]) -> np.ndarray | None:
        runner = self.parts.get(boundary.index)
        if runner is None:
            return None
        feed = dict(zip(boundary.inputs, inputs))  # a layer reading one tensor twice gets it once
        arrays = [feed[n] for n in dict.fromkeys(boundary.inputs)]
        for spec, a in zip(runner.inputs(), arrays):
            if len(spec.shape) != a.ndim or any(spec.fixed(k) not in (None, n) for k, n in enumerate(a.shape)):
                self.failed[boundary.index] = f"cut out at {spec.name} {spec.shape}, fed {a.shape}"
                return None
        return run_typed(runner, arrays)[boundary.output]

    def close(self) -> None:
        for r in [self.whole, *self.parts.values()]:
            if r is not None:
                r.deactivate()


class TorchLayers:
    """Every layer's inputs and output in PyTorch, captured by forward hooks."""

    def __init__(self, net: Detector) -> None:
        self.net = net.float().eval()

    def run(self, images: np.ndarray) -> dict[int, tuple[list[np.ndarray], np.ndarray]]:
        seen: dict[int, tuple[list[np.ndarray], np.ndarray]] = {}

        def hook(i: int) -> Any:
            def capture(_m: Any, args: tuple[Any, ...], out: torch.Tensor) -> None:
                x = args[0]
                xs = list(x) if isinstance(x, (list, tuple)) else [x]
                seen[i] = ([t.numpy().copy() for t in xs], out.numpy().copy())
            return capture

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.net.model)]
        try:
            with torch.inference_mode():
                self.net(torch.from_numpy(np.ascontiguousarray(images)))
        finally:
            for h in handles:
                h.remove()
        return seen


class ReferenceLayers(Protocol):
    """What the reference must do: every layer's inputs and output for a batch of images."""

    def run(self, images: np.ndarray) -> dict[int, tuple[list[np.ndarray], np.ndarray]]:
        """{layer index: (its input arrays in 'from' order, its output array)}."""


def per_block(net: Detector | ReferenceLayers, backend: BlockBackend, boundaries: list[LayerBoundary],
              batches: Iterable[tuple[np.ndarray, int]], tolerance: float = DEFAULT_TOLERANCE,
              layout: str | None = None, accumulated: bool = True) -> BlockReport:
    """Both errors for every layer over ``batches``: (images shaped for the candidate, how many
    of them are real; the rest is padding to a fixed batch, run but not counted). The reference
    is a PyTorch detector (``parity``), or any ``ReferenceLayers`` with the head's ``layout``
    (``calib`` ranks a Q/DQ graph against the float32 ONNX it came from, by local errors alone:
    ``accumulated=False`` skips the candidate's whole-graph run)."""
    if isinstance(net, torch.nn.Module):
        reference: ReferenceLayers = TorchLayers(net)
        layout = head_of(net).layout
    else:
        reference, layout = net, layout or layouts.YOLOV5
    report = BlockReport([BlockRow(b, stats_for(b.module, layout) if accumulated else None, stats_for(b.module, layout))
                          for b in boundaries], tolerance)
    for row in report.rows:
        if (why := backend.why_not(row.boundary)):
            row.local, row.note = None, why
    for images, real in batches:
        ref = reference.run(images)
        cand = backend.layer_outputs(images) if accumulated else {}
        for row in report.rows:
            inputs, out = ref[row.boundary.index]
            if row.accumulated is not None:
                row.accumulated.add(out, cand[row.boundary.output])
            if row.local is not None:
                alone = backend.layer_alone(row.boundary, inputs)
                if alone is None:  # no figure rather than an empty one that reads as no error
                    row.local, row.note = None, backend.why_not(row.boundary) or "could not be run alone"
                else:
                    row.local.add(out, alone)
        report.images += real
    return report
