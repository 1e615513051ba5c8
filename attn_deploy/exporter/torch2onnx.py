"""PyTorch -> ONNX for our detectors (YOLOv5 and the anchor-free family): standard ops,
simplified, named, reproducible.

We use torch's TorchScript-based exporter (``dynamo=False``) on purpose. It covers opsets
13-20, which TensorRT 8.x on Jetson needs (the dynamo exporter emits opset 18 and converts
down); it takes dynamic batch/height/width without the dynamo exporter's 0/1 specialisation
(which fails or freezes dimensions when an example axis is 1); and it names nodes by module
path (``/model.9/conv1/Conv``), which later steps use to find a block's nodes. Its known
failure modes on attention modules (adaptive pooling to (H, 1), ``aten::diag``, in-place
writes into buffers) are designed out of our modules; the test matrix proves every module at
two opsets, static and dynamic.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from attn_deploy import __version__, layouts
from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import split_merged_concats
from attn_deploy.files import quiet
from attn_deploy.models.heads import Detector, head_of
from attn_deploy.models.quantized import fused
from attn_deploy.models.yolo import check_size_limits

MIN_OPSET, MAX_OPSET = 13, 20
INPUT, OUTPUT = "images", "output0"


@dataclass(frozen=True)
class ExportSpec:
    """What graph to make: input size (H, W), batch, dynamic axes, opset."""

    imgsz: tuple[int, int] = (640, 640)
    batch: int = 1
    dynamic: bool = False
    opset: int = 17

    def check(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserError(f"--opset {self.opset} is not supported", f"use {MIN_OPSET} to {MAX_OPSET}")
        check_size_limits(self.imgsz, self.batch)

    def dynamic_axes(self, layout: str = layouts.YOLOV5) -> dict[str, dict[int, str]] | None:
        """Batch, height and width of the input; batch and the per-anchor axis of ``output0``
        (an end-to-end output has a fixed ``max_det`` rows)."""
        if not self.dynamic:
            return None
        out = {0: "batch"} if layout == layouts.END2END else {0: "batch", layouts.anchors_axis(layout): "boxes"}
        return {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: out}


def torch_to_onnx(model: Detector, spec: ExportSpec) -> bytes:
    """The raw exporter output (before clean-up), for a float32 CPU model in eval mode."""
    spec.check()
    layout = head_of(model).layout
    model = fused(model.float().cpu().eval())
    x = torch.zeros(spec.batch, model.yaml["ch"], *spec.imgsz)
    return export_legacy(model, x, opset_version=spec.opset, do_constant_folding=True, input_names=[INPUT],
                         output_names=[OUTPUT], dynamic_axes=spec.dynamic_axes(layout))


def export_legacy(module: torch.nn.Module, x: torch.Tensor, **options: Any) -> bytes:
    """``torch.onnx.export`` (TorchScript, see above) of ``module`` on ``x``, silently.

    The exporter's deprecation notice and tracer warnings about Python ints taken from shapes
    are expected (the parity check, not a warning, says whether a graph is right), and on a
    failure its C++ side prints the whole TorchScript graph to the process's stdout (861 lines
    for one user block). Nothing of it reaches the terminal: what it printed is kept on the
    exception as ``exporter_log``, which a user error's detail shows under ``--verbose``."""
    buf = io.BytesIO()
    with quiet() as log, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), buf, dynamo=False, **options)
        except Exception as e:
            e.exporter_log = log  # type: ignore[attr-defined]  # filled in as quiet() ends
            raise
    return buf.getvalue()




def clean(model_bytes: bytes, name: str, metadata: dict[str, str]) -> "onnx.ModelProto":  # noqa: F821
    """Constant-fold and simplify (onnxslim), drop doc strings, stamp producer and metadata."""
    import onnx
    import onnxslim

    proto = onnx.load_from_string(model_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = onnxslim.slim(proto)
    if split_merged_concats(proto.graph):  # the new tensors get their shapes, as onnxslim gave the rest
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    proto.graph.name = name
    proto.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
    proto.producer_name, proto.producer_version = "attn-deploy", __version__
    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def onnx_metadata(model: Detector, spec: ExportSpec) -> dict[str, str]:
    """The metadata keys yolov5's and ultralytics' own loaders read (``stride``, ``names``,
    ``task``, ``imgsz``, ``batch``, ``end2end``), as Python literals, plus our layout name."""
    head = head_of(model)
    meta = {
        "stride": str(int(model.stride.max())),
        "names": str({i: n for i, n in enumerate(model.names)}),
        "task": "detect",
        "imgsz": str(list(spec.imgsz)),
        "batch": str(spec.batch),
        "output_layout": head.layout,
    }
    if head.kind == "anchor-free":
        meta["end2end"] = str(head.layout == layouts.END2END)
    return meta
