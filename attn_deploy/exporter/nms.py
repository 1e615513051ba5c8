"""An end-to-end graph: the decoded output followed by ONNX's standard NonMaxSuppression.

Outputs follow the layout TensorRT users know from its EfficientNMS plugin, built here from
standard ops only (no plugin): ``num_dets`` (N, 1) int32, ``det_boxes`` (N, K, 4) float xyxy in
input pixels, ``det_scores`` (N, K) float, ``det_classes`` (N, K) int32. Rows past
``num_dets`` hold zeros and class -1.

How: scores = objectness x class probability (N, nc, A) for YOLOv5's (N, A, 5 + nc) output;
the class probabilities themselves for an anchor-free (N, 4 + nc, A) one; NonMaxSuppression per class
(at most K per class) gives (batch, class, box) triples; their scores are scattered into a
zero (N, nc, A) map, whose best K per image (TopK over nc*A) are the detections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from attn_deploy import layouts
from attn_deploy.errors import UserError

NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
TOPK_LIMIT = 3840  # TensorRT's TopK needs K below this


@dataclass(frozen=True)
class NmsOptions:
    """``export --nms``: detections kept per image, the IoU above which boxes are suppressed, the minimum score."""

    topk: int = 100
    iou_thres: float = 0.45
    conf_thres: float = 0.25

    def check(self) -> None:
        if not 1 <= self.topk < TOPK_LIMIT:
            raise UserError(f"--topk must be between 1 and {TOPK_LIMIT - 1} (TensorRT's TopK limit), got {self.topk}")
        for name, v in (("--iou-thres", self.iou_thres), ("--conf-thres", self.conf_thres)):
            if not 0.0 <= v <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {v}")


class _Builder:
    """Nodes and constants under the ``/nms/`` name scope of one graph."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.nodes: list[Any] = []

    def const(self, name: str, value: object, dtype: object = np.int64) -> str:
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"/nms/{name}"))
        return f"/nms/{name}"

    def __call__(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: object) -> list[str]:
        outs = [name] if name in NMS_OUTPUTS else [f"/nms/{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"/nms/{name}", **attrs))
        return outs


def _boxes_and_scores(b: _Builder, output: str) -> tuple[str, str]:
    """(N, A, 4) xyxy boxes and (N, nc, A) scores = objectness x class probability."""
    axis2 = b.const("axis2", [2])
    (xy,) = b("Slice", [output, b.const("s0", [0]), b.const("s2", [2]), axis2], "xy")
    (wh,) = b("Slice", [output, b.const("s2b", [2]), b.const("s4", [4]), axis2], "wh")
    (obj,) = b("Slice", [output, b.const("s4b", [4]), b.const("s5", [5]), axis2], "obj")
    (cls,) = b("Slice", [output, b.const("s5b", [5]), b.const("end", [2**62]), axis2], "cls")
    (half,) = b("Mul", [wh, b.const("half", 0.5, np.float32)], "half_wh")
    (boxes,) = b("Concat", [b("Sub", [xy, half], "x1y1")[0], b("Add", [xy, half], "x2y2")[0]], "boxes", axis=2)
    (scores,) = b("Transpose", [b("Mul", [obj, cls], "scores")[0]], "scores_t", perm=[0, 2, 1])
    return boxes, scores


def _anchor_free_boxes_and_scores(b: _Builder, output: str) -> tuple[str, str]:
    """(N, A, 4) xyxy boxes and (N, nc, A) scores from an anchor-free (N, 4 + nc, A) output."""
    axis1 = b.const("axis1s", [1])
    (xy,) = b("Slice", [output, b.const("s0", [0]), b.const("s2", [2]), axis1], "xy")
    (wh,) = b("Slice", [output, b.const("s2b", [2]), b.const("s4", [4]), axis1], "wh")
    (scores,) = b("Slice", [output, b.const("s4b", [4]), b.const("end", [2**62]), axis1], "scores")
    (half,) = b("Mul", [wh, b.const("half", 0.5, np.float32)], "half_wh")
    (corners,) = b("Concat", [b("Sub", [xy, half], "x1y1")[0], b("Add", [xy, half], "x2y2")[0]], "corners", axis=1)
    (boxes,) = b("Transpose", [corners], "boxes", perm=[0, 2, 1])
    return boxes, scores


def _top_detections(b: _Builder, boxes: str, scores: str, opts: NmsOptions) -> tuple[str, str]:
    """NMS per class, then the best K (scores, flat class*A + box indices) per image."""
    (sel,) = b("NonMaxSuppression", [
        boxes, scores, b.const("max_per_class", [opts.topk]),
        b.const("iou", [opts.iou_thres], np.float32), b.const("conf", [opts.conf_thres], np.float32),
    ], "nms")  # (S, 3): batch, class, box
    zero = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
    (zeros,) = b("ConstantOfShape", [b("Shape", [scores], "shape")[0]], "zeros", value=zero)
    (kept,) = b("ScatterND", [zeros, sel, b("GatherND", [scores, sel], "picked")[0]], "kept")  # (N, nc, A)
    (flat,) = b("Reshape", [kept, b.const("flat_shape", [0, -1])], "flat")  # (N, nc*A)
    (n_cand,) = b("Gather", [b("Shape", [flat], "flat_shape_of")[0], b.const("one", [1])], "n_cand")
    (k,) = b("Min", [b.const("k", [opts.topk]), n_cand], "k")
    vals, idx = b("TopK", [flat, k], "topk", n_out=2, axis=1, largest=1, sorted=1)
    return vals, idx


def _outputs(b: _Builder, boxes: str, vals: str, idx: str) -> None:
    """The four EfficientNMS-style outputs; padding rows get zeros and class -1."""
    axis1, axis2 = b.const("axis1", [1]), b.const("axis2o", [2])
    (n_box,) = b("Gather", [b("Shape", [boxes], "boxes_shape")[0], axis1], "n_box")
    (cls_idx,) = b("Div", [idx, n_box], "cls_idx")
    (box_idx,) = b("Sub", [idx, b("Mul", [cls_idx, n_box], "cls_base")[0]], "box_idx")
    (valid,) = b("Greater", [vals, b.const("zero", 0.0, np.float32)], "valid")
    (valid_f,) = b("Cast", [valid], "valid_f", to=TensorProto.FLOAT)
    shape4 = b("Concat", [b("Shape", [idx], "idx_shape")[0], b.const("four", [4])], "idx4_shape", axis=0)[0]
    (idx4,) = b("Expand", [b("Unsqueeze", [box_idx, axis2], "box_idx_u")[0], shape4], "idx4")
    (raw_boxes,) = b("GatherElements", [boxes, idx4], "raw_boxes", axis=1)
    b("Mul", [raw_boxes, b("Unsqueeze", [valid_f, axis2], "valid_u")[0]], "det_boxes")
    b("Mul", [vals, valid_f], "det_scores")
    cls_i32 = b("Cast", [cls_idx], "cls_i32", to=TensorProto.INT32)[0]
    b("Where", [valid, cls_i32, b.const("minus1", -1, np.int32)], "det_classes")
    b("ReduceSum", [b("Cast", [valid], "valid_i32", to=TensorProto.INT32)[0], axis1], "num_dets", keepdims=1)


def append_nms(proto: Any, opts: NmsOptions, layout: str = layouts.YOLOV5, output: str = "output0") -> Any:
    """Replace the graph output ``output`` of an onnx.ModelProto, (N, A, 5 + nc) or an
    anchor-free (N, 4 + nc, A), by the four NMS outputs."""
    opts.check()
    if layout not in layouts.RAW:
        raise UserError(f"--nms needs a per-anchor output; this graph's is {layout}",
                        "the end-to-end head needs no NMS: export it without --nms")
    g = proto.graph
    out = next(o for o in g.output if o.name == output)
    dim = out.type.tensor_type.shape.dim[0]
    batch = dim.dim_value or dim.dim_param or "batch"
    b = _Builder(g)
    pick = _anchor_free_boxes_and_scores if layout == layouts.ANCHOR_FREE else _boxes_and_scores
    boxes, scores = pick(b, output)
    vals, idx = _top_detections(b, boxes, scores, opts)
    _outputs(b, boxes, vals, idx)
    g.node.extend(b.nodes)
    g.output.remove(out)
    g.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch, 1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [batch, "topk", 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [batch, "topk"]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT32, [batch, "topk"]),
    ])
    return proto
