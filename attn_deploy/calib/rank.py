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
from attn_deploy.diagnose.blocks import BlockReport, per_block
from attn_deploy.diagnose.onnx_blocks import OnnxBlocks, OnnxLayers
from attn_deploy.exporter.layers import LayerRow, find_boundaries


@dataclass(frozen=True)
class LayerError:
    layer: int
    module: str
    attention: bool
    rel: float  # local max |error| over max |output| (Detect: boxes and scores apart, the worse)
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "module": self.module, "attention": self.attention, "local_rel": self.rel,
                "local_cosine": self.cosine}


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


def ranking(report: BlockReport) -> list[LayerError]:
    """Layers by local error, the largest first; layers without a local figure last, in order."""
    rows = [LayerError(r.boundary.index, r.boundary.module, r.boundary.attention,
                       r.local.rel if r.local is not None else float("nan"),
                       float(r.local.cosine) if r.local is not None else float("nan")) for r in report.rows]
    return sorted(rows, key=lambda e: (np.isnan(e.rel), -e.rel if not np.isnan(e.rel) else e.layer))


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
