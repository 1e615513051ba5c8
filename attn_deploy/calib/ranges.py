"""Activation ranges chosen by the error they cause, from histograms collected once.

Model Optimizer's ONNX INT8 calibrates every activation one way for the whole graph (``max``:
the largest |value| seen; ``entropy``: TensorRT's KL-divergence clip). On the official YOLOv5n
neither is what a symmetric INT8 tensor of a SiLU network needs: ``max`` spends the 127 steps
on a few outliers, ``entropy`` clips by information, not by error. Here, each quantized
activation of the Q/DQ graph is observed once on the float32 graph (the same tensor, by name),
as a histogram of |x| (the error of symmetric INT8 depends on |x| alone), and its clip is
chosen per tensor:

- ``mse``: the clip whose quantize-dequantize error, integrated over the histogram, is least
  (NVIDIA's pytorch-quantization calls it the "mse" histogram calibrator; its yolov7 QAT
  sample names "Histogram(MSE)" the best PTQ method).
- ``percentile``: the clip at a share of the histogram's mass (99.99 % by default).
- ``max``: the largest |x|, as Model Optimizer's ``max``.

Written by hand because the calibrators that compute these (pytorch-quantization, ONNX
Runtime's ``HistogramCalibrater``) work on a torch module or rewrite the graph themselves,
and Model Optimizer's ONNX path offers max and entropy only; what is needed here is the
statistics of tensors of a graph Model Optimizer already placed Q/DQ in, and the scale edit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

BINS = 2048
PERCENTILE = 99.99
RANGES = ("max", "mse", "percentile")


@dataclass
class Histogram:
    """|x| of one tensor: counts over ``BINS`` equal bins from 0 to ``top``."""

    counts: np.ndarray
    top: float

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.top, len(self.counts) + 1)

    def add(self, values: np.ndarray) -> None:
        a = np.abs(values.astype(np.float32, copy=False)).ravel()
        self.counts += np.histogram(np.minimum(a, self.top), bins=len(self.counts), range=(0.0, self.top))[0]


def activation_tensors(qdq: onnx.ModelProto) -> dict[str, str]:
    """The activation each QuantizeLinear of ``qdq`` reads (not a weight) -> the tensor of the
    float32 graph it is a copy of (Model Optimizer's casts to float16 looked through)."""
    inits = {t.name for t in qdq.graph.initializer}
    made = {o: n for n in qdq.graph.node for o in n.output}
    out = {}
    for q in qdq.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        name = q.input[0]
        while name in made and made[name].op_type == "Cast":
            name = made[name].input[0]
        out[q.input[0]] = name
    return out


def collect(src: onnx.ModelProto, tensors: Iterable[str], images: np.ndarray) -> dict[str, Histogram]:
    """Histograms of |x| of ``tensors`` of the float32 ``src`` over ``images`` (N, 3, H, W): one
    pass for each tensor's largest value, one to fill its bins."""
    from attn_deploy.calib.rank import graph_batch, padded_batches
    from attn_deploy.engines import OnnxrtRunner

    names = sorted(set(tensors))
    model = onnx.ModelProto()
    model.CopyFrom(src)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    data = model.SerializeToString()
    batch = graph_batch(src)
    tops = dict.fromkeys(names, 0.0)
    with OnnxrtRunner(data) as run:
        feed_name = run.input_names()[0]
        for chunk, _ in padded_batches(images, batch):
            outs = _outputs(run, feed_name, chunk, names)
            for n in names:
                tops[n] = max(tops[n], float(np.abs(outs[n]).max()))
        hists = {n: Histogram(np.zeros(BINS, np.int64), tops[n] or 1.0) for n in names}
        for chunk, _ in padded_batches(images, batch):
            outs = _outputs(run, feed_name, chunk, names)
            for n in names:
                hists[n].add(outs[n])
    return hists


def _outputs(run: Any, feed_name: str, chunk: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    outs = run.run({feed_name: chunk})
    return {n: (chunk if n == feed_name else outs[n]) for n in names}


# Ops that move INT8 values without arithmetic: TensorRT runs them on the quantized tensor, so
# every Q/DQ pair around one (a Concat's inputs and output, SPPF's chain of MaxPools, the Resize
# before a Concat) must share one scale, or the engine requantizes where our graph does not.
# Model Optimizer ties these already (by the largest range); a new range keeps the ties. A
# residual Add's inputs keep scales of their own, as Model Optimizer writes them (whether an
# engine's convolution + add fusion would rather have them tied is not measured here: no TensorRT).
SHARING = frozenset({"Concat", "MaxPool", "Resize"})


def tied(qdq: onnx.ModelProto) -> list[list[str]]:
    """Groups of quantized tensors (QuantizeLinear inputs) that must share one scale: those
    joined through ``SHARING`` ops (inputs read through a DequantizeLinear, outputs read by a
    QuantizeLinear), in graph order; a tensor alone is a group of one."""
    made = {o: n for n in qdq.graph.node for o in n.output}
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    quantized = list(activation_tensors(qdq))
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in qdq.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    for n in qdq.graph.node:
        if n.op_type not in SHARING:
            continue
        key = "node:" + n.name
        for t in n.input[:1] if n.op_type != "Concat" else n.input:
            p = made.get(t)
            if p is not None and p.op_type == "DequantizeLinear" and made.get(p.input[0]) is not None:
                union(key, made[p.input[0]].input[0])
            elif p is not None and p.op_type in SHARING:
                union(key, "node:" + p.name)
        for o in n.output:
            if any(r.op_type == "QuantizeLinear" for r in readers.get(o, [])):
                union(key, o)
    groups: dict[str, list[str]] = {}
    for t in dict.fromkeys(quantized):
        groups.setdefault(find(t), []).append(t)
    return list(groups.values())


def pooled(hists: list[Histogram]) -> Histogram:
    """One histogram of the values of several (their bins spread over the widest range)."""
    if len(hists) == 1:
        return hists[0]
    top = max(h.top for h in hists)
    counts = np.zeros(BINS, np.int64)
    for h in hists:
        centres = (h.edges[:-1] + h.edges[1:]) / 2
        counts += np.histogram(centres, bins=BINS, range=(0.0, top), weights=h.counts)[0].astype(np.int64)
    return Histogram(counts, top)


def quantization_error(h: Histogram, amax: float) -> float:
    """The mean squared error of symmetric INT8 (127 steps) with clip ``amax``, over the histogram
    (each bin's values at its centre)."""
    centres = (h.edges[:-1] + h.edges[1:]) / 2
    step = amax / 127
    q = np.minimum(np.round(centres / step), 127) * step
    total = h.counts.sum()
    return float((h.counts * (centres - q) ** 2).sum() / total) if total else 0.0


def amax_mse(h: Histogram, first: int = 128, stride: int = 8) -> float:
    """The bin edge from ``first`` on whose clip has the least quantization error."""
    edges = h.edges
    candidates = list(range(first, len(h.counts) + 1, stride))
    if candidates[-1] != len(h.counts):
        candidates.append(len(h.counts))
    errors = [quantization_error(h, edges[i]) for i in candidates]
    return float(edges[candidates[int(np.argmin(errors))]])


def amax_percentile(h: Histogram, percentile: float = PERCENTILE) -> float:
    cdf = np.cumsum(h.counts) / max(int(h.counts.sum()), 1)
    i = int(np.searchsorted(cdf, percentile / 100))
    return float(h.edges[min(i + 1, len(h.counts))])


def choose(h: Histogram, how: str) -> float:
    if how == "max":
        return h.top
    if how == "mse":
        return amax_mse(h)
    if how == "percentile":
        return amax_percentile(h)
    raise ValueError(f"range {how!r}: one of {', '.join(RANGES)}")


def rescaled(src: onnx.ModelProto, qdq: onnx.ModelProto, images: np.ndarray, how: str) -> onnx.ModelProto:
    """``qdq`` (Model Optimizer's graph of the float32 ``src``) with every activation's scale
    chosen by ``how`` from its histogram over ``images``; a tied group's from its members' pooled
    histogram."""
    acts = activation_tensors(qdq)
    hists = collect(src, acts.values(), images)
    amax = {}
    for group in tied(qdq):
        a = choose(pooled([hists[acts[t]] for t in group]), how)
        amax.update(dict.fromkeys(group, a))
    return set_scales(qdq, amax)


def set_scales(qdq: onnx.ModelProto, amax: dict[str, float]) -> onnx.ModelProto:
    """A copy of ``qdq`` whose activation Q/DQ pairs (by the tensor quantized) take the scale
    ``amax / 127``, in each scale initializer's own dtype; nothing else changes."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    inits = {t.name: t for t in out.graph.initializer}
    readers = {n.input[0]: n for n in out.graph.node if n.op_type == "DequantizeLinear"}
    for q in out.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in amax or q.output[0] not in readers:
            continue
        for name in (q.input[1], readers[q.output[0]].input[1]):
            old = numpy_helper.to_array(inits[name])
            value = np.full(old.shape, max(amax[q.input[0]], 1e-8) / 127, dtype=old.dtype)
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return out
