"""The YOLOv5 (v6/v7) loss and target assignment, as ``utils/loss.py:ComputeLoss`` computes it.

Targets are assigned to every anchor whose width and height ratios to the box are within
``anchor_t`` (4), in the box centre's cell and the two neighbouring cells nearest the centre
(offset 0.5): up to 3 cells x 3 anchors per box and level. Box loss is 1 - CIoU on the
decoded prediction, objectness is BCE against the (detached, clamped) CIoU of the assigned
cells, class loss BCE with one-hot targets. Levels weigh objectness 4.0 / 1.0 / 0.4
(P3 / P4 / P5), and the gains scale with classes, image size and levels as YOLOv5's
``train.py`` scales them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attn_deploy.models.common import Detect

BALANCE = {3: [4.0, 1.0, 0.4]}
OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


@dataclass(frozen=True)
class LossGains:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0

    def scaled(self, nc: int, imgsz: int, nl: int) -> LossGains:
        """YOLOv5's train.py: class gain by nc/80, objectness by (imgsz/640)^2, all by 3/nl."""
        k = 3 / nl
        return LossGains(self.box * k, self.obj * (imgsz / 640) ** 2 * k, self.cls * nc / 80 * k, self.anchor_t)


def bbox_ciou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired xywh boxes (Zheng et al., arXiv:1911.08287)."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a.unbind(-1), b.unbind(-1)
    a1x, a2x, a1y, a2y = ax - aw / 2, ax + aw / 2, ay - ah / 2, ay + ah / 2
    b1x, b2x, b1y, b2y = bx - bw / 2, bx + bw / 2, by - bh / 2, by + bh / 2
    inter = (torch.min(a2x, b2x) - torch.max(a1x, b1x)).clamp(0) * (torch.min(a2y, b2y) - torch.max(a1y, b1y)).clamp(0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    cw = torch.max(a2x, b2x) - torch.min(a1x, b1x)
    ch = torch.max(a2y, b2y) - torch.min(a1y, b1y)
    c2 = cw**2 + ch**2 + eps
    rho2 = (bx - ax) ** 2 + (by - ay) ** 2
    v = (4 / math.pi**2) * (torch.atan(bw / (bh + eps)) - torch.atan(aw / (ah + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    def __init__(self, detect: Detect, gains: LossGains) -> None:
        self.detect, self.gains = detect, gains
        self.bce = nn.BCEWithLogitsLoss()
        self.balance = BALANCE.get(detect.nl, [4.0, 1.0, 0.25, 0.06, 0.02])

    def __call__(self, preds: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """``preds``: Detect's training output; ``targets``: (n, 6) image, class, xywh in [0, 1].
        Returns the loss to minimise (summed over the batch, as YOLOv5) and (box, obj, cls)."""
        nc = self.detect.nc
        lbox, lobj, lcls = (torch.zeros((), device=targets.device) for _ in range(3))
        for i, (p, (tcls, tbox, (b, a, gj, gi), anchors)) in enumerate(zip(preds, self.build_targets(preds, targets))):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype, device=p.device)
            if len(b):
                pxy, pwh, _, pcls = p[b, a, gj, gi].split((2, 2, 1, nc), 1)
                pbox = torch.cat((pxy.sigmoid() * 2 - 0.5, (pwh.sigmoid() * 2) ** 2 * anchors), 1)
                iou = bbox_ciou(pbox, tbox)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if nc > 1:
                    onehot = torch.zeros_like(pcls)
                    onehot[torch.arange(len(b)), tcls] = 1.0
                    lcls = lcls + self.bce(pcls, onehot)
            lobj = lobj + self.bce(p[..., 4], tobj) * self.balance[i]
        g = self.gains
        parts = torch.stack((lbox * g.box, lobj * g.obj, lcls * g.cls))
        return parts.sum() * preds[0].shape[0], parts.detach()

    def build_targets(self, preds: list[Tensor], targets: Tensor) -> list[tuple[Tensor, Tensor, tuple[Tensor, ...], Tensor]]:
        det, nt = self.detect, targets.shape[0]
        ai = torch.arange(det.na, device=targets.device).float().view(det.na, 1).repeat(1, nt)
        all_t = torch.cat((targets.repeat(det.na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        off = OFFSETS.to(targets.device)
        out = []
        for i, p in enumerate(preds):
            anchors, (_, _, ny, nx, _) = det.anchors[i], p.shape
            gain = torch.tensor([1, 1, nx, ny, nx, ny, 1], dtype=torch.float32, device=targets.device)
            t, offsets = all_t * gain, torch.zeros((0, 2), device=targets.device)
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                t = t[torch.max(r, 1 / r).max(2)[0] < self.gains.anchor_t]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
                m_, n_ = ((gxi % 1 < 0.5) & (gxi > 1)).T
                pick = torch.stack((torch.ones_like(j), j, k, m_, n_))
                t = t.repeat((5, 1, 1))[pick]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[pick]
            else:
                t = all_t[0]
            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gi, gj = gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)
            out.append((c, torch.cat((gxy - gij, gwh), 1), (b, a, gj, gi), anchors[a]))
        return out
