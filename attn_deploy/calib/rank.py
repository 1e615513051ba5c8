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
# one2one_); the decode at the layer's own scope belongs to the boxes. The two branches are
# two entries, so one can stay in INT8: both at the Detect's place in the ranking, the boxes
# first. Their local errors are not comparable (pixels against probabilities: the scores' is
# always the larger), and on the anchor-free demo the boxes are what INT8 hurts (kept out
# alone, the damage falls from 2.12 to 0.16 points; the scores alone, to 1.98).
HEAD_PARTS = {"boxes": ("cv2", "one2one_cv2", "dfl", ""), "scores": ("cv3", "one2one_cv3")}


@dataclass(frozen=True)
class LayerError:
    layer: int
    module: str
    attention: bool
    rel: float  # local max |error| over max |output| (Detect: boxes and scores apart, the worse)
    cosine: float
    part: str = ""  # "boxes" or "scores": one branch of an anchor-free Detect

    @property
    def name(self) -> str:
        return f"model.{self.layer} {self.module}" + (f" {self.part}" if self.part else "")

    def nodes(self, layer_nodes: list[str]) -> list[str]:
        """This entry's nodes among its layer's (all of them, or one Detect branch's)."""
        if not self.part:
            return list(layer_nodes)
        return [n for n in layer_nodes if _child(n) in HEAD_PARTS[self.part]]

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
    batch = _batch(src)
    try:
        return per_block(reference, backend, bounds, _batches(images, batch), layout=layout, accumulated=False)
    finally:
        backend.close()
        reference.close()


def ranking(report: BlockReport, layout: str = layouts.YOLOV5) -> list[LayerError]:
    """Layers by local error, the largest first; layers without a local figure last, in order.
    An anchor-free Detect (``layout``) is two entries, its boxes and its scores."""
    rows, place = [], {}  # place: the layer's own local error, where its entries sort
    for r in report.rows:
        b, local = r.boundary, r.local
        place[b.index] = local.rel if local is not None else float("nan")
        if local is None:
            rows.append(LayerError(b.index, b.module, b.attention, float("nan"), float("nan")))
        elif isinstance(local, DetectStats) and layout != layouts.YOLOV5:
            rows += [LayerError(b.index, b.module, b.attention, part.rel, float(part.cosine), name)
                     for name, part in (("boxes", local.boxes), ("scores", local.scores))]
        else:
            rows.append(LayerError(b.index, b.module, b.attention, local.rel, float(local.cosine)))
    unmeasured = lambda e: bool(np.isnan(place[e.layer]))  # noqa: E731
    return sorted(rows, key=lambda e: (unmeasured(e), e.layer if unmeasured(e) else -place[e.layer], e.part))


def _batch(model: onnx.ModelProto) -> int:
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    return inp.type.tensor_type.shape.dim[0].dim_value or 1


def _batches(images: np.ndarray, batch: int) -> list[tuple[np.ndarray, int]]:
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, 0)])
        out.append((chunk, real))
    return out
