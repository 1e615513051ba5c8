"""Every layer's INT8 sensitivity in one pass: per-block parity of the naive Q/DQ graph.

``parity --per-block`` runs each yaml layer of a candidate alone, fed the reference's own
inputs to it, and measures what that layer adds (its local error). Run on the graph with
everything in INT8, against the float32 ONNX it was calibrated from, it ranks all layers at
once: the quantization error each one makes, apart from what it inherits. ``calib`` keeps
layers out of INT8 in that order and confirms with mAP only the sets it would choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from attn_deploy import layouts
from attn_deploy.diagnose.blocks import BlockReport, DetectStats, per_block
from attn_deploy.diagnose.onnx_blocks import OnnxBlocks, OnnxLayers
from attn_deploy.exporter.layers import LayerRow, find_boundaries


# An anchor-free Detect computes boxes and class scores in separate branches (ultralytics'
# names: cv2 and the DFL for boxes, cv3 for classes; YOLO26's one-to-one head the same with
# one2one_); the decode at the layer's own scope belongs to the boxes. It is three entries, at
# the Detect's place in the ranking in this order: its output convolutions (each branch's last,
# the raw predictions, and the DFL), then the rest of the box branch, then the rest of the
# score branch, so that as much of the head as the budget allows stays in INT8. Their local
# errors are not comparable (pixels against probabilities: the scores' is always the larger).
# Measured on the anchor-free demo (300 val images, calib_bench): everything in INT8 loses
# 2.1 points; the whole box branch kept out, 0.16 at 76 % of the MACs in INT8; the output
# convolutions alone, 0.21 at 98.8 %. A YOLOv5 Detect is one entry: its output convolutions.
HEAD_PARTS = {"boxes": ("cv2", "one2one_cv2", "dfl", ""), "scores": ("cv3", "one2one_cv3")}
PART_ORDER = ("outputs", "boxes", "scores")


def is_output_conv(node: str) -> bool:
    """Whether a node of an anchor-free Detect is one of its output convolutions: a Conv that is
    not a Conv block's (``.../cv2.0.2/Conv``, not ``.../cv2.0.0/conv/Conv``), or the DFL's.
    ``models/quantized.head_outputs`` picks the same convolutions in the PyTorch model."""
    parts = node.split("/")
    return len(parts) > 2 and parts[-1] == "Conv" and (parts[-2] != "conv" or _child(node) == "dfl")


@dataclass(frozen=True)
class LayerError:
    layer: int
    module: str
    attention: bool
    rel: float  # local max |error| over max |output| (Detect: boxes and scores apart, the worse)
    cosine: float
    part: str = ""  # "outputs", "boxes" or "scores": one part of an anchor-free Detect

    @property
    def name(self) -> str:
        return f"model.{self.layer} {self.module}" + (f" {self.part}" if self.part else "")

    def nodes(self, layer_nodes: list[str]) -> list[str]:
        """This entry's nodes among its layer's (all of them, or one Detect branch's)."""
        if not self.part:
            return list(layer_nodes)
        if self.part == "outputs":
            return [n for n in layer_nodes if is_output_conv(n)]
        return [n for n in layer_nodes if _child(n) in HEAD_PARTS[self.part] and not is_output_conv(n)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "module": self.module, "attention": self.attention,
                "local_rel": self.rel, "local_cosine": self.cosine}


def _child(node: str) -> str:
    """The child module a node of /model.<i>/ sits in, without its index ('cv2' for
    /model.23/cv2.1/cv2.1.0/conv/Conv), or '' for the layer's own nodes."""
    parts = node.split("/")
    return parts[2].split(".")[0] if len(parts) > 3 else ""


def local_errors(src: onnx.ModelProto, qdq: bytes, rows: list[LayerRow], images: np.ndarray,
                 layout: str = layouts.YOLOV5) -> BlockReport:
    """Per-block parity of ``qdq`` against ``src`` (float32) on ``images`` (N, 3, H, W), one at a
    time (the graphs have a fixed batch; a larger one is filled by repeating the images)."""
    reference = OnnxLayers(src, find_boundaries(src, rows))
    candidate = onnx.load_from_string(qdq)
    bounds = find_boundaries(candidate, rows)
    backend = OnnxBlocks(candidate, bounds)
    batch = graph_batch(src)
    try:
        return per_block(reference, backend, bounds, padded_batches(images, batch), layout=layout, accumulated=False)
    finally:
        backend.close()
        reference.close()


def ranking(report: BlockReport, layout: str = layouts.YOLOV5) -> list[LayerError]:
    """Layers by local error, the largest first; layers without a local figure last, in order.
    An anchor-free Detect (``layout``) is three entries: its output convolutions (the worse of
    the two branches' local figures), the rest of its boxes, the rest of its scores."""
    rows, place = [], {}  # place: the layer's own local error, where its entries sort
    for r in report.rows:
        b, local = r.boundary, r.local
        place[b.index] = local.rel if local is not None else float("nan")
        if local is None:
            rows.append(LayerError(b.index, b.module, b.attention, float("nan"), float("nan")))
        elif isinstance(local, DetectStats) and layout != layouts.YOLOV5:
            worse = LayerError(b.index, b.module, b.attention, max(local.boxes.rel, local.scores.rel),
                               float(min(local.boxes.cosine, local.scores.cosine)), "outputs")
            rows += [worse, *(LayerError(b.index, b.module, b.attention, part.rel, float(part.cosine), name)
                              for name, part in (("boxes", local.boxes), ("scores", local.scores)))]
        else:
            rows.append(LayerError(b.index, b.module, b.attention, local.rel, float(local.cosine)))
    unmeasured = lambda e: bool(np.isnan(place[e.layer]))  # noqa: E731
    part = lambda e: PART_ORDER.index(e.part) if e.part else 0  # noqa: E731
    return sorted(rows, key=lambda e: (unmeasured(e), e.layer if unmeasured(e) else -place[e.layer], part(e)))


def graph_batch(model: onnx.ModelProto) -> int:
    """The fixed batch of the graph's image input (1 where it is dynamic)."""
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    return inp.type.tensor_type.shape.dim[0].dim_value or 1


def padded_batches(images: np.ndarray, batch: int) -> list[tuple[np.ndarray, int]]:
    """``images`` in batches of ``batch``, the last filled by repeating its last image, each with its count of real images."""
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, 0)])
        out.append((chunk, real))
    return out
