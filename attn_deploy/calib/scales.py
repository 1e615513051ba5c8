"""Better scales before fewer quantized layers (``--method best``): each layer's activation
scales from the calibration that serves it best.

Model Optimizer calibrates the whole graph one way (``max``: the largest value seen;
``entropy``: the clip that keeps the histogram's information). Neither is best everywhere: a
gate's sigmoid output wants its full range, a wide activation with rare outliers wants them
clipped. Both calibrations quantize the same tensors with the same weights; only activation
scales differ. Per-block parity of each naive graph measures every layer's local error under
each (``rank.py``); the mixed graph is the ``max`` one with, for each layer whose local output
is closer in direction (cosine) under ``entropy``, the scales of the Q/DQ pairs that layer
reads taken from the entropy graph (a pair read by several layers follows the first of them in
graph order). Cosine, not the max-relative error that ranks layers: clipping outliers is what
entropy is for, and a max error punishes exactly that (measured on the shapes demo: choosing by
max error kept most layers at ``max`` and lost 2.55 points, by cosine 2.32; all ``max`` 3.60,
all ``entropy`` 2.42). An edit of initializers: no third calibration, and the result is again
one graph that surgery and the search work on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from attn_deploy.calib.rank import LayerError
from attn_deploy.exporter.layers import LayerRow
from attn_deploy.onnxfile import layer_of

def pair_owners(model: onnx.ModelProto) -> dict[str, int]:
    """The quantized tensor of each QuantizeLinear -> the yaml layer of the first node reading
    it through its DequantizeLinear."""
    made = {o: n for n in model.graph.node for o in n.output}
    owners: dict[str, int] = {}
    for node in model.graph.node:  # graph order: the first reader wins
        layer = layer_of(node.name)
        if layer is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for t in node.input:
            dq = made.get(t)
            q = made.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                owners.setdefault(q.input[0], layer)
    return owners


def _scales(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Quantized tensor -> (its QuantizeLinear's scale initializer, its DequantizeLinear's)."""
    readers = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for q in model.graph.node:
        if q.op_type == "QuantizeLinear" and q.output[0] in readers:
            out[q.input[0]] = (q.input[1], readers[q.output[0]].input[1])
    return out


def mix_scales(first: onnx.ModelProto, second: onnx.ModelProto, layers: Iterable[int]) -> onnx.ModelProto:
    """A copy of ``first`` whose activation pairs read by ``layers`` carry ``second``'s scales."""
    wanted = set(layers)
    owners = pair_owners(first)
    mine, theirs = _scales(first), _scales(second)
    values = {t.name: t for t in second.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(first)
    inits = {t.name: t for t in out.graph.initializer}
    for tensor, (q_scale, dq_scale) in mine.items():
        if owners.get(tensor) not in wanted or tensor not in theirs:
            continue
        for ours, source in zip((q_scale, dq_scale), theirs[tensor]):
            if ours in inits and source in values and inits[ours].dims == values[source].dims:
                inits[ours].CopyFrom(values[source])
                inits[ours].name = ours
    return out


def better_layers(first: list[LayerError], second: list[LayerError]) -> list[int]:
    """Layers whose local output keeps its direction better under the second calibration (a
    larger cosine to float32; an anchor-free Detect: the worst of its parts)."""
    def cosines(errors: list[LayerError]) -> dict[int, float]:
        out: dict[int, float] = {}
        for e in errors:
            if e.cosine == e.cosine:  # a layer without a local figure (NaN) is not compared
                out[e.layer] = min(out.get(e.layer, 1.0), e.cosine)
        return out

    a, b = cosines(first), cosines(second)
    return sorted(i for i in b if i in a and b[i] > a[i])


def best_scales(path: Path, src: onnx.ModelProto, images: np.ndarray, rows: list[LayerRow], layout: str,
                rank_images: int) -> tuple[bytes, list[int]]:
    """The ``max`` naive graph of the float32 ``src`` (at ``path``) with the layers ``entropy``
    serves better on its scales, and those layers."""
    from attn_deploy.calib.int8 import quantize_int8
    from attn_deploy.calib.rank import local_errors, ranking

    graphs = {m: quantize_int8(path, images, m) for m in ("max", "entropy")}
    errors = {m: ranking(local_errors(src, g, rows, images[:rank_images], layout), layout) for m, g in graphs.items()}
    layers = better_layers(errors["max"], errors["entropy"])
    mixed = mix_scales(onnx.load_from_string(graphs["max"]), onnx.load_from_string(graphs["entropy"]), layers)
    return mixed.SerializeToString(), layers
