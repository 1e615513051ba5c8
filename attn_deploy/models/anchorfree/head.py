"""The anchor-free detection head (YOLOv8, YOLO11, YOLO12, YOLO26) and its decode.

Per level, a box branch ``cv2`` predicts 4 distances (left, top, right, bottom) from each cell
centre, each as a distribution over ``reg_max`` bins (Distribution Focal Loss, "Generalized
Focal Loss", arXiv:2006.04388) or, with ``reg_max: 1`` (YOLO26), directly; a class branch
``cv3`` predicts per-class logits. YOLO11 and later make the class branch cheaper with
depthwise convs; YOLOv8's ``legacy`` head uses plain 3x3 convs. YOLO26's end-to-end head adds
``one2one_*`` copies of both branches, trained one-to-one so that no NMS is needed. Which
pair runs in eval is ``use_one2one``: off by default, as in ultralytics 8.4 (its ``nms=None``
default runs the one-to-many branches and leaves NMS to the caller; ``nms=False`` picks the
one-to-one pair). Both decode to the same layout.

Eval output: (B, 4 + nc, anchors), xywh in input pixels then class probabilities, the layout
ultralytics' Detect exports. With ``max_det`` set (end-to-end heads only), the one-to-one pair
runs and its best ``max_det`` (anchor, class) pairs come out as (B, max_det, 6): x1, y1, x2, y2,
score, class; the NMS-free output YOLO26 is made for. Training output: the raw per-branch maps.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from attn_deploy.models.anchorfree.blocks import DWConv
from attn_deploy.models.common import Conv


class DFL(nn.Module):
    """The expectation of a softmax over ``c1`` bins: a fixed 1x1 conv whose weights are 0..c1-1.

    Kept as a conv (not a sum) because checkpoints carry ``dfl.conv.weight``.
    """

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.c1 = c1
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float32).view(1, c1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, a = x.shape  # (b, 4 * c1, anchors)
        bins = x.view(b, 4, self.c1, a).transpose(1, 2).softmax(dim=1)  # (b, c1, 4, anchors)
        return self.conv(bins).view(b, 4, a)


def make_anchors(feats: list[Tensor], strides: Tensor, offset: float = 0.5) -> tuple[Tensor, Tensor]:
    """Cell centres in grid units, (2, anchors) as x, y, and each anchor's stride, (1, anchors)."""
    points, steps = [], []
    for feat, stride in zip(feats, strides):
        h, w = feat.shape[-2:]
        ys = torch.arange(h, dtype=feat.dtype, device=feat.device) + offset
        xs = torch.arange(w, dtype=feat.dtype, device=feat.device) + offset
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx.reshape(-1), gy.reshape(-1)), 0))
        steps.append(torch.ones(1, h * w, dtype=feat.dtype, device=feat.device) * stride.to(feat.dtype))
    return torch.cat(points, 1), torch.cat(steps, 1)


def dist2bbox(distance: Tensor, points: Tensor) -> Tensor:
    """(b, 4, anchors) left/top/right/bottom distances around (2, anchors) points -> xywh."""
    lt, rb = distance.split((2, 2), dim=1)
    top_left, bottom_right = points - lt, points + rb  # corners first: the rounding ultralytics has
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), 1)


def _branch(c_in: int, c_mid: int, c_out: int, depthwise: bool) -> nn.Sequential:
    if depthwise:
        return nn.Sequential(
            nn.Sequential(DWConv(c_in, c_in, 3), Conv(c_in, c_mid, 1)),
            nn.Sequential(DWConv(c_mid, c_mid, 3), Conv(c_mid, c_mid, 1)),
            nn.Conv2d(c_mid, c_out, 1),
        )
    return nn.Sequential(Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, c_out, 1))


class Detect(nn.Module):
    """The anchor-free head over ``ch`` levels; ``stride`` is set by the model's trial forward."""

    stride: Tensor

    def __init__(
        self, nc: int = 80, reg_max: int = 16, end2end: bool = False, ch: list[int] = (), legacy: bool = False
    ) -> None:
        super().__init__()
        self.nc, self.nl, self.reg_max, self.legacy = nc, len(ch), reg_max, legacy
        self.no = nc + 4 * reg_max
        box_mid = max(16, ch[0] // 4, 4 * reg_max)
        cls_mid = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(_branch(c, box_mid, 4 * reg_max, depthwise=False) for c in ch)
        self.cv3 = nn.ModuleList(_branch(c, cls_mid, nc, depthwise=not legacy) for c in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        if end2end:
            self.one2one_cv2 = copy.deepcopy(self.cv2)
            self.one2one_cv3 = copy.deepcopy(self.cv3)
        self.use_one2one = False
        self.max_det: int | None = None  # set: the end-to-end top-k output (see the module text)
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)

    @property
    def end2end(self) -> bool:
        """Whether the head has the one-to-one (NMS-free) branches."""
        return hasattr(self, "one2one_cv2")

    def _heads(self, xs: list[Tensor], box: nn.ModuleList, cls: nn.ModuleList) -> tuple[Tensor, Tensor]:
        b = xs[0].shape[0]
        boxes = torch.cat([box[i](x).view(b, 4 * self.reg_max, -1) for i, x in enumerate(xs)], -1)
        scores = torch.cat([cls[i](x).view(b, self.nc, -1) for i, x in enumerate(xs)], -1)
        return boxes, scores

    def forward(self, xs: list[Tensor]) -> Tensor | dict[str, tuple[Tensor, Tensor]]:
        if self.training:
            out = {"one2many": self._heads(xs, self.cv2, self.cv3)}
            if self.end2end:
                out["one2one"] = self._heads([x.detach() for x in xs], self.one2one_cv2, self.one2one_cv3)
            return out
        one2one = self.end2end and (self.use_one2one or self.max_det is not None)
        pair = (self.one2one_cv2, self.one2one_cv3) if one2one else (self.cv2, self.cv3)
        boxes, scores = self._heads(xs, *pair)
        if one2one and self.max_det is not None:
            return top_detections(torch.cat((self.decode(boxes, xs, corners=True), scores.sigmoid()), 1), self.max_det)
        return torch.cat((self.decode(boxes, xs), scores.sigmoid()), 1)

    def decode(self, boxes: Tensor, xs: list[Tensor], corners: bool = False) -> Tensor:
        """Raw box outputs (b, 4 * reg_max, anchors) -> xywh (or x1y1x2y2) in input pixels."""
        points, strides = make_anchors(xs, self.stride)
        distance = self.dfl(boxes)
        if corners:
            lt, rb = distance.split((2, 2), dim=1)
            return torch.cat((points - lt, points + rb), 1) * strides
        return dist2bbox(distance, points) * strides

    def bias_init(self, strides: list[float] | None = None) -> None:
        """Box logits start at 2; class logits at a prior of ~5 objects per 640 image over nc."""
        strides = self.stride.tolist() if strides is None else strides
        pairs = [(self.cv2, self.cv3)] + ([(self.one2one_cv2, self.one2one_cv3)] if self.end2end else [])
        for box, cls in pairs:
            for a, b, s in zip(box, cls, strides):
                nn.init.constant_(a[-1].bias, 2.0)
                nn.init.constant_(b[-1].bias, math.log(5 / self.nc / (640 / s) ** 2))


def top_detections(decoded: Tensor, max_det: int) -> Tensor:
    """(B, 4 + nc, anchors) corners + scores -> (B, max_det, 6) x1, y1, x2, y2, score, class.

    Two top-k passes, as the one-to-one head is meant to be read: the ``max_det`` anchors with
    the highest best-class score, then the ``max_det`` best (anchor, class) pairs among them,
    best first. Gathers only, so it exports as TopK/GatherElements (TensorRT takes both; its
    TopK wants K below 3840).
    """
    rows = decoded.transpose(1, 2)  # (B, A, 4 + nc)
    nc = rows.shape[-1] - 4
    _, anchor = rows[..., 4:].amax(-1).topk(max_det, dim=1)  # (B, K)
    rows = rows.gather(1, anchor.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))
    boxes, scores = rows.split((4, nc), dim=-1)
    best, flat = scores.flatten(1).topk(max_det, dim=1)  # over K x nc
    boxes = boxes.gather(1, (flat // nc).unsqueeze(-1).expand(-1, -1, 4))
    return torch.cat((boxes, best.unsqueeze(-1), (flat % nc).unsqueeze(-1).to(boxes.dtype)), -1)
