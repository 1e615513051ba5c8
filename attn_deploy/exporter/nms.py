"""An end-to-end graph: the decoded output followed by ONNX's standard NonMaxSuppression.

Outputs follow the layout TensorRT users know from its EfficientNMS plugin, built here from
standard ops only (no plugin): ``num_dets`` (N, 1) int32, ``det_boxes`` (N, K, 4) float xyxy in
input pixels, ``det_scores`` (N, K) float, ``det_classes`` (N, K) int32. Rows past
``num_dets`` hold zeros and class -1.

How: scores = objectness x class probability (N, nc, A); NonMaxSuppression per class
(at most K per class) gives (batch, class, box) triples; their scores are scattered into a
zero (N, nc, A) map, whose best K per image (TopK over nc*A) are the detections.
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_deploy.errors import UserError

NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
TOPK_LIMIT = 3840  # TensorRT's TopK needs K below this


@dataclass(frozen=True)
class NmsOptions:
    topk: int = 100
    iou_thres: float = 0.45
    conf_thres: float = 0.25

    def check(self) -> None:
        if not 1 <= self.topk < TOPK_LIMIT:
            raise UserError(f"--topk must be between 1 and {TOPK_LIMIT - 1} (TensorRT's TopK limit), got {self.topk}")
        for name, v in (("--iou-thres", self.iou_thres), ("--conf-thres", self.conf_thres)):
            if not 0.0 <= v <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {v}")


def append_nms(proto: "onnx.ModelProto", opts: NmsOptions, output: str = "output0") -> "onnx.ModelProto":  # noqa: F821
    """Replace the graph output ``output`` (N, A, 5 + nc) by the four NMS outputs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    opts.check()
    g = proto.graph
    out = next(o for o in g.output if o.name == output)
    dims = out.type.tensor_type.shape.dim
    batch = dims[0].dim_value or dims[0].dim_param or "batch"
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: object, dtype: object = np.int64) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"/nms/{name}"))
        return f"/nms/{name}"

    def node(op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: object) -> list[str]:
        outs = [f"/nms/{name}_output_{i}" for i in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, name=f"/nms/{name}", **attrs))
        return outs

    axis2, axis1 = const("axis2", [2]), const("axis1", [1])
    (xy,) = node("Slice", [output, const("s0", [0]), const("s2", [2]), axis2], "xy")
    (wh,) = node("Slice", [output, const("s2b", [2]), const("s4", [4]), axis2], "wh")
    (obj,) = node("Slice", [output, const("s4b", [4]), const("s5", [5]), axis2], "obj")
    (cls,) = node("Slice", [output, const("s5b", [5]), const("end", [2**62]), axis2], "cls")
    (half,) = node("Mul", [wh, const("half", 0.5, np.float32)], "half_wh")
    (x1y1,) = node("Sub", [xy, half], "x1y1")
    (x2y2,) = node("Add", [xy, half], "x2y2")
    (boxes,) = node("Concat", [x1y1, x2y2], "boxes", axis=2)  # (N, A, 4) xyxy
    (scores,) = node("Mul", [obj, cls], "scores")  # (N, A, nc)
    (scores_t,) = node("Transpose", [scores], "scores_t", perm=[0, 2, 1])  # (N, nc, A)
    (sel,) = node("NonMaxSuppression", [
        boxes, scores_t, const("max_per_class", [opts.topk]),
        const("iou", [opts.iou_thres], np.float32), const("conf", [opts.conf_thres], np.float32),
    ], "nms")  # (S, 3): batch, class, box
    (picked,) = node("GatherND", [scores_t, sel], "picked")  # (S,)
    (shape,) = node("Shape", [scores_t], "shape")
    (zeros,) = node("ConstantOfShape", [shape], "zeros", value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    (kept,) = node("ScatterND", [zeros, sel, picked], "kept")  # (N, nc, A)
    (flat,) = node("Reshape", [kept, const("flat_shape", [0, -1])], "flat")  # (N, nc*A)
    (n_cand,) = node("Gather", [node("Shape", [flat], "flat_shape_of")[0], const("one", [1])], "n_cand")
    (k,) = node("Min", [const("k", [opts.topk]), n_cand], "k")
    vals, idx = node("TopK", [flat, k], "topk", n_out=2, axis=1, largest=1, sorted=1)
    (n_box,) = node("Gather", [node("Shape", [boxes], "boxes_shape")[0], axis1], "n_box")
    (cls_idx,) = node("Div", [idx, n_box], "cls_idx")
    (box_idx,) = node("Sub", [idx, node("Mul", [cls_idx, n_box], "cls_base")[0]], "box_idx")
    (valid,) = node("Greater", [vals, const("zero", 0.0, np.float32)], "valid")
    (valid_f,) = node("Cast", [valid], "valid_f", to=TensorProto.FLOAT)
    (idx4,) = node("Expand", [
        node("Unsqueeze", [box_idx, axis2], "box_idx_u")[0],
        node("Concat", [node("Shape", [idx], "idx_shape")[0], const("four", [4])], "idx4_shape", axis=0)[0],
    ], "idx4")
    (raw_boxes,) = node("GatherElements", [boxes, idx4], "raw_boxes", axis=1)
    node("Mul", [raw_boxes, node("Unsqueeze", [valid_f, axis2], "valid_u")[0]], "det_boxes")
    node("Mul", [vals, valid_f], "det_scores")
    node("Where", [valid, node("Cast", [cls_idx], "cls_i32", to=TensorProto.INT32)[0], const("minus1", -1, np.int32)], "det_classes")
    (count,) = node("Cast", [valid], "valid_i32", to=TensorProto.INT32)
    node("ReduceSum", [count, axis1], "num_dets", keepdims=1)

    rename = {f"/nms/{n}_output_0": n for n in NMS_OUTPUTS}
    for n in nodes:
        n.output[:] = [rename.get(o, o) for o in n.output]
    g.node.extend(nodes)
    g.output.remove(out)
    k_dim = "topk"
    g.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch, 1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [batch, k_dim, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [batch, k_dim]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT32, [batch, k_dim]),
    ])
    return proto
