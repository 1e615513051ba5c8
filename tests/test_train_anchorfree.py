"""The anchor-free training loss: the task-aligned assigner on hand-made boxes, DFL against
GFL's formula, and a tiny YOLO11 and YOLO26 that learn one batch."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy.data import ImageLoader, load_data
from attn_deploy.models.anchorfree import build_anchor_free
from attn_deploy.models.anchorfree.archs import YOLO11, YOLO26
from attn_deploy.train.shapes import CLASSES, write_dataset
from attn_deploy.train.tal import AnchorFreeLoss, TaskAlignedAssigner, box_iou_xyxy, dfl_loss
from attn_deploy.train.trainer import evaluate

# a 4 x 4 grid of anchor centres, stride 8: x, y in (4, 12, 20, 28)
POINTS = torch.tensor([[x, y] for y in (4.0, 12.0, 20.0, 28.0) for x in (4.0, 12.0, 20.0, 28.0)])
GT = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [10.0, 10.0, 32.0, 32.0]]])  # class 0 top left, 1 bottom right


def _anchor(x: float, y: float) -> int:
    return int(((POINTS[:, 0] == x) & (POINTS[:, 1] == y)).nonzero())


def _assign(pred: torch.Tensor, topk: int = 10, scores: torch.Tensor | None = None):
    scores = torch.full((1, 16, 3), 0.5) if scores is None else scores
    labels, mask = torch.tensor([[0, 1]]), torch.tensor([[True, True]])
    return TaskAlignedAssigner(topk)(scores, pred, POINTS, labels, GT, mask)


def _predictions() -> torch.Tensor:
    """Each anchor predicts a 12 x 12 box around itself, but (12, 12) predicts one like box 1."""
    pred = torch.cat((POINTS - 6, POINTS + 6), 1)[None].clone()
    pred[0, _anchor(12, 12)] = torch.tensor([9.0, 9.0, 31.0, 31.0])
    return pred


def test_assigner_gives_each_anchor_inside_a_box_that_box() -> None:
    got = _assign(_predictions())
    first = {_anchor(4, 4), _anchor(12, 4), _anchor(4, 12)}
    second = {_anchor(x, y) for x in (12, 20, 28) for y in (12, 20, 28)}  # (12, 12) is inside both boxes
    assert set(got.fg[0].nonzero().view(-1).tolist()) == first | second
    assert all(got.labels[0, i] == 0 for i in first) and all(got.labels[0, i] == 1 for i in second)
    # (12, 12) lies in both boxes and overlaps box 1 most (IoU 0.84 against 0.07): box 1 wins
    assert got.labels[0, _anchor(12, 12)] == 1 and torch.equal(got.boxes[0, _anchor(12, 12)], GT[0, 1])
    outside = _anchor(28, 4)
    assert not got.fg[0, outside] and got.scores[0, outside].sum() == 0
    assert (got.scores >= 0).all() and (got.scores <= 1).all()
    assert (got.scores[0, :, 2] == 0).all()  # no box of class 2


def test_target_scores_are_alignment_normalised_to_the_best_iou() -> None:
    pred = _predictions()
    got = _assign(pred)
    iou = box_iou_xyxy(GT[0, :, None], pred[0][None])  # (2, 16)
    for gt, cls, anchors in ((0, 0, [_anchor(4, 4), _anchor(12, 4), _anchor(4, 12)]),
                             (1, 1, [_anchor(x, y) for x in (12, 20, 28) for y in (12, 20, 28)])):
        u = iou[gt, anchors]
        t = 0.5**0.5 * u**6  # every score is 0.5, so t orders as the IoU does
        expected = t * u.max() / t.max()
        assert torch.allclose(got.scores[0, anchors, cls], expected, atol=1e-6)
        assert got.scores[0, anchors, cls].max() == pytest.approx(float(u.max()), abs=1e-6)


def test_topk_keeps_the_best_aligned_candidates() -> None:
    pred = _predictions()
    scores = torch.full((1, 16, 3), 0.5)
    # (4, 4), (12, 4) and (4, 12) overlap box 0 alike (IoU 1/3); the class scores decide
    scores[0, _anchor(4, 12), 0], scores[0, _anchor(4, 4), 0] = 0.99, 0.7
    got = _assign(pred, topk=2, scores=scores)
    first = set((got.fg[0] & (got.labels[0] == 0)).nonzero().view(-1).tolist())
    assert first == {_anchor(4, 4), _anchor(4, 12)}
    # box 1: (12, 12) (IoU 0.84) and (20, 20) (IoU 0.30, its box inside box 1) align best
    second = set((got.fg[0] & (got.labels[0] == 1)).nonzero().view(-1).tolist())
    assert second == {_anchor(12, 12), _anchor(20, 20)}


def test_no_boxes_means_no_positives() -> None:
    labels, boxes = torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4)
    pred, mask = _predictions().repeat(2, 1, 1), torch.zeros(2, 0, dtype=torch.bool)
    got = TaskAlignedAssigner()(torch.rand(2, 16, 3), pred, POINTS, labels, boxes, mask)
    assert not got.fg.any() and got.scores.sum() == 0


def test_dfl_is_gfl_formula_by_hand() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5]])
    # target 1.3 lies between bins 1 and 2: -((2 - 1.3) log S1 + (1.3 - 1) log S2)
    z = sum(math.exp(v) for v in (0.0, 1.0, 2.0, 0.5))
    by_hand = -(0.7 * math.log(math.exp(1.0) / z) + 0.3 * math.log(math.exp(2.0) / z))
    assert dfl_loss(logits, torch.tensor([1.3])).item() == pytest.approx(by_hand, abs=1e-6)
    # on a bin exactly, all weight on it
    on_bin = -math.log(math.exp(2.0) / z)
    assert dfl_loss(logits, torch.tensor([2.0])).item() == pytest.approx(on_bin, abs=1e-6)


def _tiny(cfg: dict, nc: int = 3) -> torch.nn.Module:
    """The family's layers at an eighth of the n width (C2PSA keeps one head), ~0.3 M parameters."""
    cfg = {**copy.deepcopy(cfg), "scales": {"t": [0.33, 0.125, 256]}}
    return build_anchor_free(cfg, "tiny", scale="t", nc=nc).train()


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is several times faster than two on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cfg", [YOLO11, YOLO26], ids=["yolo11", "yolo26"])
def test_loss_falls_when_fitting_one_batch(cfg: dict, one_thread: None) -> None:
    torch.manual_seed(0)
    net = _tiny(cfg)
    x = torch.rand(2, 3, 64, 64)
    # boxes large enough that the first predictions (15 strides a side) overlap them: the
    # normaliser (the sum of the soft targets) is then above 1 from the start, so the loss
    # does not first rise as the overlaps, and with them the targets, grow
    targets = torch.tensor([[0, 1, 0.35, 0.4, 0.6, 0.7], [1, 2, 0.5, 0.5, 0.7, 0.6],
                            [1, 0, 0.3, 0.7, 0.4, 0.4]])
    loss_fn = AnchorFreeLoss(net.detect, 64)
    opt = torch.optim.AdamW(net.parameters(), lr=0.002)
    losses = []
    for _ in range(20):
        loss, parts = loss_fn(net(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert parts.shape == (3,) and torch.isfinite(parts).all()
        assert net.detect.reg_max > 1 or parts[2] == 0  # no DFL term without bins
    assert losses[-1] < 0.5 * losses[0], [round(v, 2) for v in losses]


def test_evaluate_reads_the_anchor_free_layout(tmp_path: Path) -> None:
    """A model whose (N, 4 + nc, anchors) output is the letterboxed ground truth scores mAP 1."""
    data = write_dataset(tmp_path, train=0, val=3)
    outputs = []
    for b in ImageLoader(load_data(data, "val"), (96, 96), batch_size=16, on_error="fail"):
        out = torch.zeros(len(b.labels), 4 + len(CLASSES), max(len(lab) for lab in b.labels))
        for i, (placed, lab) in enumerate(zip(b.placements, b.labels)):
            (h, w), r, (dw, dh) = placed.shape, placed.ratio, placed.pad
            xywh = lab[:, 1:] * np.array([w * r, h * r, w * r, h * r]) + np.array([dw, dh, 0, 0])
            out[i, :4, :len(lab)] = torch.from_numpy(xywh.T.astype(np.float32))
            out[i, 4 + lab[:, 0].astype(int), np.arange(len(lab))] = 0.9
        outputs.append(out)
    net = _tiny(YOLO11, nc=len(CLASSES))
    net.forward = lambda x: outputs.pop(0)
    result = evaluate(net, data, 96)
    assert result.map50 == pytest.approx(1.0) and result.map50_95 > 0.95
