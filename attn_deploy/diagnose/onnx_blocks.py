"""Per-block parity for an ONNX candidate on ONNX Runtime.

The boundaries become extra outputs of a copy held in memory (the file on disk is never
touched), and each layer is cut out with ``onnx.utils.Extractor``, the ONNX library's own
subgraph extraction, to run alone on PyTorch's inputs to it. ``OnnxLayers`` is the other side
for a reference that is itself an ONNX file (the float32 graph a Q/DQ one came from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from attn_deploy.diagnose.blocks import RunnerBlocks, run_typed
from attn_deploy.engines.onnxrt import OnnxrtRunner
from attn_deploy.exporter.layers import GRAPH_INPUT, LayerBoundary


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``tensors`` (typed from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in dict.fromkeys(tensors):
        if name in present:
            continue
        if name not in types:
            raise ValueError(f"tensor {name!r} has no type after shape inference")
        elem = types[name].type.tensor_type.elem_type
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return out


class OnnxBlocks(RunnerBlocks):
    """``BlockBackend`` for an ONNX file: one session for the boundaries, one per layer."""

    def __init__(self, path: str | Path | onnx.ModelProto, boundaries: list[LayerBoundary]) -> None:
        super().__init__()
        model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
        self.whole = OnnxrtRunner(with_outputs(model, [b.output for b in boundaries]).SerializeToString())
        extractor = onnx.utils.Extractor(model)
        for b in boundaries:
            try:
                sub = extractor.extract_model(list(dict.fromkeys(b.inputs)), [b.output])
                part = OnnxrtRunner(sub.SerializeToString())
                part.activate()  # a subgraph ONNX Runtime refuses fails here, not mid-run
                self.parts[b.index] = part
            except Exception as e:  # noqa: BLE001 - a layer that cannot be cut out loses its local figure only
                self.failed[b.index] = f"could not be cut out: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"


class OnnxLayers:
    """A ``ReferenceLayers`` from an ONNX graph: one session whose outputs are every boundary."""

    def __init__(self, model: onnx.ModelProto | str | Path, boundaries: list[LayerBoundary]) -> None:
        model = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        self.boundaries = boundaries
        self.runner = OnnxrtRunner(with_outputs(model, [b.output for b in boundaries]).SerializeToString())

    def run(self, images: np.ndarray) -> dict[int, tuple[list[np.ndarray], np.ndarray]]:
        out = {**run_typed(self.runner, [images]), GRAPH_INPUT: images}
        return {b.index: ([out[t] for t in b.inputs], out[b.output]) for b in self.boundaries}

    def close(self) -> None:
        self.runner.deactivate()
