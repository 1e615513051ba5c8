"""What a detector's head is and what it outputs: the family, the head kind, the layout.

Every verb after ``export`` needs the same three facts; the exporter writes them into the
sidecar (``family``, ``head``, ``output_layout``) and ``match_sidecar`` sets a PyTorch
reference up the way the exported graph was made (YOLO26's end-to-end head or not), so that
``parity``, ``calib`` and ``ship`` need no flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from attn_deploy import layouts
from attn_deploy.errors import UserError
from attn_deploy.models.anchorfree import AnchorFreeModel
from attn_deploy.models.yolo import DetectionModel

Detector = DetectionModel | AnchorFreeModel
MAX_DET = 300  # YOLO26's end-to-end detections per image, as its release exports them


@dataclass(frozen=True)
class Head:
    family: str  # yolov5, yolov8, yolo11, yolo12, yolo26
    kind: str  # anchor-based | anchor-free
    reg_max: int  # box bins (DFL) per side; 1 = direct distances; 0 for anchor-based heads
    end2end: bool  # has YOLO26's one-to-one branches
    layout: str  # of output0: layouts.YOLOV5, ANCHOR_FREE or END2END
    max_det: int | None = None  # the end-to-end top-k, when that is the output

    def describe(self) -> str:
        if self.kind == "anchor-based":
            return f"{self.family}: anchor-based Detect, 3 anchors per level, output (N, anchors, 5 + nc)"
        box = f"DFL with {self.reg_max} bins" if self.reg_max > 1 else "direct box distances (no DFL)"
        e2e = ", one-to-one branches (NMS-free)" if self.end2end else ""
        out = (f"(N, {self.max_det}, 6) x1 y1 x2 y2 score class" if self.layout == layouts.END2END
               else "(N, 4 + nc, anchors) xywh + class scores")
        return f"{self.family}: anchor-free Detect, {box}{e2e}; output {out}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def family_of_model(net: Detector) -> str:
    """The family a model belongs to: its built-in name's, else read from its rows
    (YOLO26: an end-to-end head; YOLO12: area attention; YOLO11: C3k2; else YOLOv8)."""
    from attn_deploy.models.zoo import family_of

    named = family_of(net.name)
    if named:
        return named
    if isinstance(net, DetectionModel):
        return "yolov5"
    modules = {row.name.split(".")[-1] for row in net.rows}
    if net.detect.end2end:
        return "yolo26"
    return "yolo12" if "A2C2f" in modules else "yolo11" if "C3k2" in modules else "yolov8"


def head_of(net: Detector) -> Head:
    det = net.detect
    family = family_of_model(net)
    if isinstance(net, DetectionModel):
        return Head(family, "anchor-based", 0, False, layouts.YOLOV5)
    layout = layouts.END2END if det.max_det is not None else layouts.ANCHOR_FREE
    return Head(family, "anchor-free", det.reg_max, det.end2end, layout, det.max_det)


def set_end2end(net: Detector, max_det: int | None = MAX_DET) -> Detector:
    """Make ``net`` output its one-to-one top-k (``max_det``), or its usual output (None)."""
    if max_det is None:
        if isinstance(net, AnchorFreeModel):
            net.detect.max_det = None
        return net
    if not isinstance(net, AnchorFreeModel) or not net.detect.end2end:
        raise UserError(f"{net.name} has no one-to-one head: --end2end is for YOLO26-style models (end2end: true)",
                        "export without --end2end and use --nms for an end-to-end graph")
    if not 1 <= max_det < 3840:
        raise UserError(f"--max-det must be from 1 to 3839 (TensorRT's TopK limit), got {max_det}")
    net.detect.max_det = int(max_det)
    return net


def match_sidecar(net: Detector, sidecar: dict[str, Any] | None) -> Detector:
    """Set ``net``'s head the way the graph described by ``sidecar`` was exported."""
    head = (sidecar or {}).get("head") or {}
    if (sidecar or {}).get("output_layout") == layouts.END2END:
        return set_end2end(net, int(head.get("max_det") or MAX_DET))
    return set_end2end(net, None)
