"""``parity``: a candidate (ONNX now, a TensorRT engine later) against the PyTorch model.

Both sides get the same letterboxed batches; their decoded outputs are compared as tensors
(boxes and scores apart), then each side goes through the same NMS and the detections are
matched (``match.py``); with labels, both sides' mAP comes from pycocotools. The gates are
detection agreement and the mAP50-95 drop: the tensor figures explain, the gates decide
(an INT8 engine never meets an FP32 tensor tolerance, and need not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy import layouts
from attn_deploy.data import Batch, ImageLoader, Letterbox, load_data
from attn_deploy.engines import Runner, TorchRunner
from attn_deploy.errors import UserError
from attn_deploy.models.heads import Detector, head_of
from attn_deploy.parity.coco import CocoEvaluator, MapResult
from attn_deploy.parity.match import Agreement, Match
from attn_deploy.parity.nms import Detections
from attn_deploy.parity.postprocess import MAP_NMS, SHIP_NMS, postprocess
from attn_deploy.parity.tensor import TensorStats, Tolerances, compare_detections_tensor, merge

OUTPUT = "output0"
DEFAULT_IMGSZ = 640
RANDOM_IMAGES = 8


@dataclass(frozen=True)
class Gates:
    """What a candidate must meet: detection agreement at ``iou``, and the mAP50-95 drop when
    labels are given; ``mismatch``: why it fails whatever it scores (an INT8 name on a float
    graph). ``parity/gates.py`` chooses them by the candidate's precision."""

    min_agreement: float = 0.95  # matched / (matched + missed + extra) at IoU >= iou
    max_map_drop: float = 0.5  # mAP50-95 points (of 100), checked when labels are given
    iou: float = 0.9  # the overlap at which two detections are the same one
    mismatch: str | None = None


@dataclass
class ParityResult:
    candidate: str
    data: str
    imgsz: tuple[int, int]
    gates: Gates
    images: int = 0  # compared
    requested: int = 0  # asked for (--data's images, up to --max-images)
    skipped: list[str] = field(default_factory=list)
    tensor: list[TensorStats] = field(default_factory=list)
    detections: Agreement = field(default_factory=Agreement)
    map_reference: MapResult | None = None
    map_candidate: MapResult | None = None
    blocks: Any = None  # a per-block report (diagnose.blocks.BlockReport), attached by the CLI
    examples: list[Example] = field(default_factory=list)  # for the report: disagreements first

    @property
    def map_drop(self) -> float | None:
        """Reference minus candidate mAP50-95, in points."""
        if self.map_reference is None or self.map_candidate is None:
            return None
        return (self.map_reference.map50_95 - self.map_candidate.map50_95) * 100

    def failures(self) -> list[str]:
        out = [self.gates.mismatch] if self.gates.mismatch else []
        if self.detections.agreement < self.gates.min_agreement:
            out.append(f"detection agreement {self.detections.agreement:.4f} < {self.gates.min_agreement:g}")
        drop = self.map_drop
        if drop is not None and drop > self.gates.max_map_drop:
            out.append(f"mAP50-95 drop {drop:.2f} points > {self.gates.max_map_drop:g}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        maps = {side: r.to_dict() for side, r in (("reference", self.map_reference), ("candidate", self.map_candidate)) if r}
        return {
            "passed": self.passed, "failures": self.failures(), "candidate": self.candidate, "data": self.data,
            "imgsz": list(self.imgsz), "images": self.images, "images_requested": self.requested,
            "images_skipped": len(self.skipped), "skipped": self.skipped,
            "gates": {"min_agreement": self.gates.min_agreement, "max_map_drop": self.gates.max_map_drop,
                      "iou": self.gates.iou},
            "tensor": {s.name: s.to_dict() for s in self.tensor},
            "detections": self.detections.to_dict(),
            **({"map50": {k: v["map50"] for k, v in maps.items()},
                "map50_95": {k: v["map50_95"] for k, v in maps.items()}, "map_drop": self.map_drop} if maps else {}),
            **(self.blocks.to_dict() if self.blocks is not None else {}),
        }


@dataclass
class Example:
    """One image's detections on both sides, kept for the report."""

    sample: Any  # data.Sample, or None for a random image
    image: np.ndarray | None  # the letterboxed input (HWC uint8) when there is no file to read
    reference: Detections
    candidate: Detections
    match: Match

    @property
    def disagreements(self) -> int:
        return len(self.match.missed) + len(self.match.extra)


@dataclass(frozen=True)
class ParityOptions:
    """``parity``'s options: ``data`` (a folder, an image or a data.yaml's val split; None: random
    images), ``imgsz`` for a candidate with dynamic H, W, ``max_images``, ``on_error`` (skip or
    fail on unreadable images), the ``gates``, the tensor tolerances, and how many ``examples``
    to keep for a report."""

    data: str | Path | None = None
    imgsz: tuple[int, int] | None = None
    max_images: int | None = None
    on_error: str = "skip"
    gates: Gates = Gates()
    tol: Tolerances = Tolerances()
    examples: int = 0  # images with detections to keep for a report


def check_parity(
    reference: Detector, candidate: Runner, name: str, opts: ParityOptions,
    progress: Callable[[int, int], None] | None = None,
) -> ParityResult:
    """Run both sides over the data and judge the candidate; ``progress(done, total)``.

    The candidate's output is read in the reference's layout: set the reference up as the
    candidate was exported first (``heads.match_sidecar``)."""
    batch, imgsz = _geometry(candidate, opts.imgsz)
    layout = head_of(reference).layout
    ref_run = TorchRunner(reference)
    loader, source_name, labelled, total = image_batches(opts, imgsz, batch)
    result = ParityResult(name, source_name, imgsz, opts.gates, requested=total, detections=Agreement(opts.gates.iou))
    evals = (CocoEvaluator(reference.detect.nc), CocoEvaluator(reference.detect.nc)) if labelled else None
    parts: dict[str, list[TensorStats]] = {}
    with candidate:
        for b in loader:
            feed = {candidate.input_names()[0]: b.padded(batch)}
            ref = ref_run.run({"images": feed[candidate.input_names()[0]]})[OUTPUT][: len(b)]
            cand = _decoded(candidate.run(feed), name)[: len(b)]
            if ref.shape != cand.shape:
                raise UserError(f"{name}: output0 is {list(cand.shape)}, PyTorch's is {list(ref.shape)}",
                                "was it exported from this model (and with the same head, --end2end or not)?")
            if layout in layouts.RAW:
                for s in compare_detections_tensor(OUTPUT, layouts.as_rows(ref, layout), layouts.as_rows(cand, layout), opts.tol):
                    parts.setdefault(s.name, []).append(s)
            _judge(result, b, ref, cand, evals, opts.examples, layout)
            result.images += len(b)
            if progress:
                progress(result.images, total)
    if not result.detections.compared:  # agreement 1.0 and a drop of 0 from nothing: a gate passed on nothing
        raise UserError(f"no detections on either side of {result.images} images: the detection gates compared "
                        "nothing", "a trained model (--weights) on images with its objects (--data)")
    result.tensor = [merge(v) for v in parts.values()]
    result.skipped = list(getattr(loader, "skipped", []))
    if evals:
        result.map_reference, result.map_candidate = evals[0].evaluate(), evals[1].evaluate()
    return result


def first_batches(candidate: Runner, opts: ParityOptions, count: int) -> Iterator[tuple[np.ndarray, int]]:
    """The first ``count`` images of the parity data as ``candidate`` takes them: (a batch
    padded to its fixed batch size, how many of it are real images). For per-block parity."""
    with candidate:  # activated only to read its input's geometry
        batch, imgsz = _geometry(candidate, opts.imgsz)
    first = ParityOptions(opts.data, opts.imgsz, count, opts.on_error)
    return ((b.padded(batch), len(b)) for b in image_batches(first, imgsz, batch)[0])


def _judge(result: ParityResult, b: Batch, ref: np.ndarray, cand: np.ndarray,
           evals: tuple[CocoEvaluator, CocoEvaluator] | None, keep: int = 0, layout: str = layouts.YOLOV5) -> None:
    ships = zip(postprocess(ref, b.placements, SHIP_NMS, layout), postprocess(cand, b.placements, SHIP_NMS, layout))
    for k, (r, c) in enumerate(ships):
        m = result.detections.add(r, c)
        if keep:
            image = None if b.samples[k] is not None else to_display(b.images[k])
            result.examples.append(Example(b.samples[k], image, r, c, m))
    if keep:  # the most disagreeing images first; among equals, the earliest
        result.examples = sorted(result.examples, key=lambda e: -e.disagreements)[:keep]
    if evals is None:
        return
    for ev, pred in zip(evals, (ref, cand)):
        for placed, labels, det in zip(b.placements, b.labels, postprocess(pred, b.placements, MAP_NMS, layout)):
            ev.add(placed.shape, labels, det)


def to_display(chw: np.ndarray) -> np.ndarray:
    """A network input (RGB CHW in [0, 1]) as an RGB HWC uint8 picture."""
    return (np.clip(chw.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def _geometry(candidate: Runner, imgsz: tuple[int, int] | None) -> tuple[int, tuple[int, int]]:
    """The batch and (h, w) to feed: fixed by the candidate's input where it is static."""
    specs = candidate.inputs()
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise UserError(f"the candidate should have one NCHW image input, it has {[(s.name, s.shape) for s in specs]}")
    spec = specs[0]
    fixed = (spec.fixed(2), spec.fixed(3))
    if None not in fixed and imgsz is not None and tuple(imgsz) != fixed:
        raise UserError(f"--imgsz {imgsz[0]},{imgsz[1]} but the candidate's input is fixed at {fixed[0]},{fixed[1]}")
    size = fixed if None not in fixed else tuple(imgsz or (DEFAULT_IMGSZ, DEFAULT_IMGSZ))
    return spec.fixed(0) or 1, (int(size[0]), int(size[1]))


def image_batches(opts: ParityOptions, imgsz: tuple[int, int], batch: int) -> tuple[Any, str, bool, int]:
    """The batches to run (an ImageLoader, or random images), what they are, whether they
    carry labels, and how many images they hold."""
    if opts.data is None:
        count = opts.max_images or RANDOM_IMAGES
        return _random_batches(imgsz, batch, count), "random images (no --data)", False, count
    source = load_data(opts.data)
    loader = ImageLoader(source, imgsz, batch, opts.on_error, opts.max_images)
    return loader, source.origin, source.labelled, len(loader)


def _random_batches(imgsz: tuple[int, int], batch: int, count: int) -> list[Batch]:
    rng = np.random.default_rng(0)
    out = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        images = rng.random((n, 3, *imgsz), dtype=np.float32)
        out.append(Batch(images, [None] * n, [Letterbox(imgsz, 1.0, (0.0, 0.0))] * n, [np.zeros((0, 5))] * n))
    return out


def _decoded(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    if OUTPUT in outputs:
        return outputs[OUTPUT]
    if "num_dets" in outputs:
        raise UserError(f"{name} ends in NMS: compare the graph exported without --nms",
                        "the NMS graph itself is checked against the same NMS by 'export'")
    raise UserError(f"{name} has no '{OUTPUT}' output (outputs: {sorted(outputs)})")
