"""The demo corner: the loss against hand-worked YOLOv5 assignments, the dataset's
determinism, and a loop that learns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy.data import load_data
from attn_deploy.models.zoo import create_model
from attn_deploy.train.loss import LossGains, YoloLoss, bbox_ciou
from attn_deploy.train.shapes import CLASSES, ShapesSpec, make_image, write_dataset


def test_ciou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert bbox_ciou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # same size, centres one apart: IoU 2/6; enclosing box 3 x 2, so c^2 = 13, rho^2 = 1; v = 0
    b = torch.tensor([[1.0, 0.0, 2.0, 2.0]])
    assert bbox_ciou(a, b).item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    # same centre, 2x2 inside 4x2: IoU 1/2, v = 4/pi^2 (atan 2 - atan 1)^2, alpha = v / (v + 1/2)
    c = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    assert bbox_ciou(a, c).item() == pytest.approx(0.5 - v * v / (v + 0.5), abs=1e-6)


def test_targets_go_to_the_cells_and_anchors_yolov5_picks() -> None:
    net = create_model("yolov5n", nc=3).train()
    preds = net(torch.zeros(1, 3, 320, 320))
    # one box of class 2 centred at grid (12.3, 24.7) on P3 (40 x 40), 2 x 3.75 cells: anchor 1 exactly
    target = torch.tensor([[0, 2, 12.3 / 40, 24.7 / 40, 2 / 40, 3.75 / 40]])
    (p3, p4, p5) = YoloLoss(net.detect, LossGains()).build_targets(preds, target)
    tcls, tbox, (b, a, gj, gi), anchors = p3
    cells = {(int(x), int(y), int(z)) for x, y, z in zip(a, gj, gi)}
    # x % 1 = 0.3 < 0.5: the left neighbour too; y % 1 = 0.7: the cell below; all 3 anchors within 4x
    assert cells == {(k, j, i) for k in range(3) for j, i in ((24, 12), (24, 11), (25, 12))}
    offsets = {(round(float(x), 4), round(float(y), 4)) for x, y in tbox[:, :2]}
    assert offsets == {(0.3, 0.7), (1.3, 0.7), (0.3, -0.3)}
    assert (tcls == 2).all() and torch.allclose(tbox[:, 2:], torch.tensor([2.0, 3.75]))
    assert len(p5[0]) == 0  # on P5 the box is 0.5 x 0.94 cells, beyond 4x of every anchor


def test_loss_falls_when_fitting_one_batch() -> None:
    torch.manual_seed(0)
    net = create_model("yolov5n-ca", nc=len(CLASSES)).train()
    x = torch.rand(2, 3, 128, 128)
    targets = torch.tensor([[0, 1, 0.3, 0.3, 0.2, 0.25], [1, 4, 0.6, 0.5, 0.3, 0.3]])
    loss_fn = YoloLoss(net.detect, LossGains().scaled(len(CLASSES), 128, 3))
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    losses = []
    for _ in range(25):
        loss, _ = loss_fn(net(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_shapes_are_deterministic_and_labelled_tightly(tmp_path: Path) -> None:
    spec = ShapesSpec()
    a, la = make_image(spec, "val", 7)
    b, lb = make_image(spec, "val", 7)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(make_image(spec, "train", 7)[0][:50, :50], a[:50, :50])
    data = write_dataset(tmp_path, train=2, val=4)
    source = load_data(data)
    assert source.names == list(CLASSES) and len(source) == 4
    labels = source.samples[0].read_labels()
    assert len(labels) and (labels[:, 1:] > 0).all() and (labels[:, 1:] <= 1).all()
    sizes = np.concatenate([make_image(spec, "val", i)[1][:, 3] for i in range(20)])
    assert (sizes * 300 < 40).mean() > 0.4  # mostly small objects


def test_fine_tuning_uses_sgd_because_adam_walks_a_converged_model() -> None:
    """At an optimum the gradients are tiny: Adam still moves every weight by about its learning
    rate (its step is normalised per weight), SGD by the gradient times the rate."""
    import torch

    from attn_deploy.train.qat import QatRecipe
    from attn_deploy.train.trainer import Recipe, make_optimizer

    assert QatRecipe().trainer().optimizer == "sgd" and Recipe().optimizer == "adamw"
    moved = {}
    for name in ("adamw", "sgd"):
        net = torch.nn.Conv2d(4, 4, 3)
        before = net.weight.detach().clone()
        opt = make_optimizer(net, Recipe(lr=1e-3, weight_decay=0.0, optimizer=name))
        net.weight.grad, net.bias.grad = torch.full_like(net.weight, 1e-7), torch.zeros_like(net.bias)
        opt.step()
        moved[name] = (net.weight.detach() - before).abs().mean().item()
    assert moved["adamw"] > 0.9e-3 and moved["sgd"] < 1e-9
    with pytest.raises(ValueError, match="adamw or sgd"):
        make_optimizer(torch.nn.Conv2d(1, 1, 1), Recipe(optimizer="lion"))
