"""The anchor-free (YOLOv8/11/12/26) training loss: task-aligned assignment, CIoU, DFL, BCE.

Written from the papers. Assignment is TOOD's Task-Aligned Assigner (Feng et al.,
arXiv:2108.07755): for each ground-truth box, among the anchors whose centres lie inside it,
the ``topk`` with the highest alignment t = s^alpha * u^beta (s the predicted probability of
the box's class, u the IoU of the predicted box with it) are positives; an anchor claimed by
several boxes keeps the one it overlaps most. Its soft class target is t normalised per box so
that the best-aligned anchor gets that box's best IoU: t * max_u / max_t.

Losses, each divided by the sum of the soft targets: class BCE against the soft targets over
all anchors; box 1 - CIoU on the positives, weighted by their target; and Distribution Focal
Loss (Li et al., "Generalized Focal Loss", arXiv:2006.04388) on each of the four distances:
cross-entropy to the two bins around the target, weighted by nearness. Gains 7.5 / 0.5 / 1.5
(box / cls / dfl) and the sum times the batch size, as ultralytics trains YOLOv8. A head with
``reg_max`` 1 (YOLO26) regresses distances directly: no DFL term. An end-to-end head's
one-to-one branch is assigned with ``topk`` 1 and its loss added to the one-to-many loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attn_deploy.models.anchorfree.head import Detect, make_anchors
from attn_deploy.train.loss import bbox_ciou


@dataclass(frozen=True)
class TalGains:
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


@dataclass
class Assignment:
    """Per anchor: whether it is a positive, its box (xyxy, pixels), class and soft class target."""

    fg: Tensor  # (B, A) bool
    boxes: Tensor  # (B, A, 4)
    labels: Tensor  # (B, A) long
    scores: Tensor  # (B, A, nc)


def box_iou_xyxy(a: Tensor, b: Tensor, eps: float = 1e-9) -> Tensor:
    """Plain IoU of broadcastable xyxy boxes (..., 4)."""
    wh = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(0)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[..., 2] - x[..., 0]).clamp(0) * (x[..., 3] - x[..., 1]).clamp(0)
    return inter / (area(a) + area(b) - inter + eps)


class TaskAlignedAssigner:
    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, scores: Tensor, boxes: Tensor, points: Tensor, gt_labels: Tensor, gt_boxes: Tensor,
                 gt_mask: Tensor) -> Assignment:
        """``scores`` (B, A, nc) probabilities, ``boxes`` (B, A, 4) predicted xyxy, ``points`` (A, 2)
        anchor centres, all in pixels; ``gt_labels`` (B, M), ``gt_boxes`` (B, M, 4) xyxy and
        ``gt_mask`` (B, M) saying which of the M padded rows are real boxes."""
        b, a, nc = scores.shape
        if gt_boxes.shape[1] == 0:
            none = torch.zeros(b, a, dtype=torch.long, device=scores.device)
            return Assignment(none.bool(), boxes.new_zeros(b, a, 4), none, scores.new_zeros(b, a, nc))
        xy = points[None, None]  # (1, 1, A, 2)
        margins = torch.cat((xy - gt_boxes[:, :, None, :2], gt_boxes[:, :, None, 2:] - xy), -1)
        inside = margins.amin(-1) > self.eps
        valid = inside & gt_mask[:, :, None]  # (B, M, A)
        iou = box_iou_xyxy(gt_boxes[:, :, None], boxes[:, None]) * valid
        s = scores.gather(2, gt_labels[:, None, :].expand(b, a, -1)).transpose(1, 2)  # (B, M, A)
        metric = s.pow(self.alpha) * iou.pow(self.beta) * valid
        top = metric.topk(min(self.topk, a), dim=-1).indices
        pos = torch.zeros_like(valid).scatter_(-1, top, True) & valid
        pos = self._one_box_per_anchor(pos, iou)
        fg = pos.any(1)
        idx = pos.to(torch.uint8).argmax(1)  # (B, A): the box each positive anchor keeps
        labels = gt_labels.gather(1, idx)
        target_boxes = gt_boxes.gather(1, idx[..., None].expand(-1, -1, 4))
        metric, iou = metric * pos, iou * pos
        norm = (metric * iou.amax(-1, keepdim=True) / (metric.amax(-1, keepdim=True) + self.eps)).amax(1)
        target = F.one_hot(labels, nc).to(scores.dtype) * (norm * fg)[..., None]
        return Assignment(fg, target_boxes, labels, target)

    @staticmethod
    def _one_box_per_anchor(pos: Tensor, iou: Tensor) -> Tensor:
        """Where an anchor is a positive of several boxes, it keeps the one it overlaps most."""
        many = pos.sum(1, keepdim=True) > 1  # (B, 1, A)
        best = F.one_hot(((iou + 1) * pos).argmax(1), pos.shape[1]).permute(0, 2, 1).bool()  # (B, M, A)
        return torch.where(many, best, pos)


def dfl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """GFL's Distribution Focal Loss per distance: ``logits`` (n, reg_max) over bins 0..reg_max-1,
    ``target`` (n,) in [0, reg_max - 1): -((y_r - y) log S_l + (y - y_l) log S_r)."""
    left = target.long()
    w_left = left + 1 - target
    return (F.cross_entropy(logits, left, reduction="none") * w_left
            + F.cross_entropy(logits, left + 1, reduction="none") * (1 - w_left))


class AnchorFreeLoss:
    """The training loss of an anchor-free :class:`Detect` head at a fixed input size."""

    def __init__(self, detect: Detect, imgsz: int | tuple[int, int], gains: TalGains = TalGains(),
                 topk: int = 10) -> None:
        self.detect, self.gains = detect, gains
        self.imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        self.assigners = {"one2many": TaskAlignedAssigner(topk), "one2one": TaskAlignedAssigner(1)}

    def __call__(self, preds: dict[str, tuple[Tensor, Tensor]], targets: Tensor) -> tuple[Tensor, Tensor]:
        """``preds``: the head's training output; ``targets`` (n, 6): image, class, xywh in [0, 1].
        Returns the loss to minimise and its (box, cls, dfl) parts, gains applied."""
        parts = sum(self.branch(*preds[k], targets, self.assigners[k]) for k in preds)
        return parts.sum() * next(iter(preds.values()))[0].shape[0], parts.detach()

    def anchors(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Anchor centres (A, 2) in grid units and their strides (A, 1)."""
        h, w = self.imgsz
        strides = self.detect.stride.tolist()
        shapes = [torch.empty(0, int(h // s), int(w // s), device=device, dtype=dtype) for s in strides]
        points, strides = make_anchors(shapes, self.detect.stride)
        return points.T, strides.T

    def branch(self, raw_boxes: Tensor, logits: Tensor, targets: Tensor, assigner: TaskAlignedAssigner
               ) -> Tensor:
        """One branch's (box, cls, dfl), gains applied."""
        b, reg_max = logits.shape[0], self.detect.reg_max
        points, strides = self.anchors(logits.device, logits.dtype)
        if points.shape[0] != logits.shape[-1]:
            raise ValueError(f"the head gave {logits.shape[-1]} anchors; {self.imgsz} has {len(points)}")
        logits, dist_logits = logits.transpose(1, 2), raw_boxes.transpose(1, 2).reshape(b, -1, 4, reg_max)
        if reg_max > 1:  # the expectation over the bins, as the head's DFL decodes it
            dist = dist_logits.softmax(-1) @ torch.arange(reg_max, dtype=logits.dtype, device=logits.device)
        else:
            dist = dist_logits[..., 0]
        pred = torch.cat((points - dist[..., :2], points + dist[..., 2:]), -1)  # xyxy, grid units
        gt = self.gt_tensors(targets, b)
        got = assigner(logits.detach().sigmoid(), pred.detach() * strides, points * strides, *gt)
        total = got.scores.sum().clamp(min=1)
        cls = F.binary_cross_entropy_with_logits(logits, got.scores, reduction="none").sum() / total
        box = dfl = logits.new_zeros(())
        if got.fg.any():
            weight = got.scores.sum(-1)[got.fg]
            target = got.boxes / strides
            iou = bbox_ciou(_xywh(pred[got.fg]), _xywh(target[got.fg]))
            box = ((1 - iou) * weight).sum() / total
            if reg_max > 1:
                lt_rb = torch.cat((points - target[..., :2], target[..., 2:] - points), -1)[got.fg]
                lt_rb = lt_rb.clamp(0, reg_max - 1.01).reshape(-1)  # so the right bin, left + 1, exists
                per_side = dfl_loss(dist_logits[got.fg].reshape(-1, reg_max), lt_rb)
                dfl = (per_side.view(-1, 4).mean(-1) * weight).sum() / total
        g = self.gains
        return torch.stack((box * g.box, cls * g.cls, dfl * g.dfl))

    def gt_tensors(self, targets: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(n, 6) normalised rows -> padded per-image labels (B, M), xyxy pixel boxes (B, M, 4), mask."""
        image = targets[:, 0].long()
        m = int(torch.bincount(image, minlength=batch).max()) if len(targets) else 0
        labels = torch.zeros(batch, m, dtype=torch.long, device=targets.device)
        boxes = torch.zeros(batch, m, 4, dtype=targets.dtype, device=targets.device)
        mask = torch.zeros(batch, m, dtype=torch.bool, device=targets.device)
        h, w = self.imgsz
        scale = targets.new_tensor([w, h, w, h])
        for i in range(batch):
            rows = targets[image == i]
            n = len(rows)
            labels[i, :n], mask[i, :n] = rows[:, 1].long(), True
            xy, wh = rows[:, 2:4], rows[:, 4:6]
            boxes[i, :n] = torch.cat((xy - wh / 2, xy + wh / 2), 1) * scale
        return labels, boxes, mask


def _xywh(xyxy: Tensor) -> Tensor:
    return torch.cat(((xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]), -1)
