"""A minimal YOLO training loop: enough to make a real detector on a CPU, nothing more.

What YOLOv5's train.py does that matters at this scale is kept: its loss and target
assignment (``loss.py``; anchor-free models get the task-aligned loss of ``tal.py``), bias
priors, no weight decay on biases and BatchNorm, linear warm-up, an exponential moving
average of the weights (evaluated and saved, as YOLOv5 saves ``ema``), and validation with
the COCO evaluator. Left out: mosaic, mixup, HSV jitter,
multi-scale, anchor evolution, AMP, DDP. Images are letterboxed once by the same loader
that parity and calibration use, kept in memory, and flipped at random.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attn_deploy.data import ImageLoader, load_data
from attn_deploy.models.anchorfree import AnchorFreeModel
from attn_deploy.models.heads import head_of
from attn_deploy.models.yolo import DetectionModel
from attn_deploy.parity.coco import CocoEvaluator, MapResult
from attn_deploy.parity.postprocess import MAP_NMS, postprocess
from attn_deploy.train.loss import LossGains, YoloLoss
from attn_deploy.train.tal import AnchorFreeLoss


@dataclass(frozen=True)
class Recipe:
    imgsz: int = 320
    epochs: int = 14
    batch: int = 16
    lr: float = 0.002  # AdamW, as ultralytics picks for short runs
    final_lr: float = 0.05  # fraction of lr reached by the cosine schedule's end
    weight_decay: float = 5e-4
    warmup_iters: int = 300
    ema_decay: float = 0.9999
    ema_tau: float = 500.0
    flip: float = 0.5  # probability of each of a left-right and an up-down flip
    seed: int = 0
    threads: int = 2
    freeze_norm: bool = False  # BatchNorm keeps its statistics (fine-tuning: quantization-aware)
    holdout: int = 0  # the train split's first images, not trained on (QAT chooses its epoch on them)
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9, Nesterov): a fine-tune of a converged model


class ModelEMA:
    """YOLOv5's weight average: decay ramps up as d (1 - exp(-updates / tau))."""

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


def load_split(data: Path, split: str, imgsz: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """All images of a split letterboxed (N, 3, H, W) uint8 RGB, and labels per image
    as (n, 5) class + xywh normalised to the letterboxed input."""
    images, labels = [], []
    for batch in ImageLoader(load_data(data, split), (imgsz, imgsz), batch_size=64, on_error="fail"):
        images.append(np.round(batch.images * 255).astype(np.uint8))
        for placed, lab in zip(batch.placements, batch.labels):
            (h, w), r, (dw, dh) = placed.shape, placed.ratio, placed.pad
            out = lab.copy()
            out[:, 1] = (lab[:, 1] * w * r + dw) / imgsz
            out[:, 2] = (lab[:, 2] * h * r + dh) / imgsz
            out[:, 3] = lab[:, 3] * w * r / imgsz
            out[:, 4] = lab[:, 4] * h * r / imgsz
            labels.append(out)
    return np.concatenate(images), labels


def make_batch(images: np.ndarray, labels: list[np.ndarray], idx: np.ndarray, rng: np.random.Generator,
               flip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) float in [0, 1] and targets (n, 6): image, class, xywh."""
    x = images[idx].astype(np.float32) / 255
    rows = []
    for i, j in enumerate(idx):
        lab = labels[j].copy()
        if rng.random() < flip:
            x[i] = x[i, :, :, ::-1]
            lab[:, 1] = 1 - lab[:, 1]
        if rng.random() < flip:
            x[i] = x[i, :, ::-1, :]
            lab[:, 2] = 1 - lab[:, 2]
        rows.append(np.concatenate((np.full((len(lab), 1), i, np.float32), lab), 1))
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.concatenate(rows))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution and linear weights only (YOLOv5's three groups, as two)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if name == "weight" and not isinstance(module, nn.BatchNorm2d) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: nn.Module, data: Path, imgsz: int, split: str = "val", batch: int = 16) -> MapResult:
    """mAP of a model on a labelled split, with YOLOv5 val.py's NMS settings."""
    model.eval()
    source = load_data(data, split)
    ev = CocoEvaluator(len(source.names or []) or model.detect.nc)
    layout = head_of(model).layout
    for b in ImageLoader(source, (imgsz, imgsz), batch_size=batch, on_error="fail"):
        pred = model(torch.from_numpy(b.images)).numpy()
        for placed, lab, det in zip(b.placements, b.labels, postprocess(pred, b.placements, MAP_NMS, layout)):
            ev.add(placed.shape, lab, det)
    return ev.evaluate()


LossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def make_loss(model: nn.Module, imgsz: int) -> tuple[LossFn, tuple[str, ...]]:
    """The model's training loss and the names of the three parts it reports."""
    if isinstance(model, AnchorFreeModel):
        return AnchorFreeLoss(model.detect, imgsz), ("box", "cls", "dfl")
    gains = LossGains().scaled(model.detect.nc, imgsz, model.detect.nl)
    return YoloLoss(model.detect, gains), ("box", "obj", "cls")


def train(
    model: DetectionModel | AnchorFreeModel, data: Path, recipe: Recipe, log: Callable[[str], None] = print,
    after_epoch: Callable[[int, ModelEMA], str] | None = None, log_every: int = 0,
) -> ModelEMA:
    """Train ``model`` in place on the data.yaml's train split; returns its EMA.
    ``after_epoch(epoch, ema)`` may return a note for the epoch's log line (e.g. a val mAP);
    ``log_every`` steps, the epoch's running mean loss is logged too."""
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng(recipe.seed)
    images, labels = load_split(data, "train", recipe.imgsz)
    images, labels = images[recipe.holdout:], labels[recipe.holdout:]
    loss_fn, part_names = make_loss(model, recipe.imgsz)
    opt = make_optimizer(model, recipe)
    ema = ModelEMA(model, recipe.ema_decay, recipe.ema_tau)
    per_epoch = len(images) // recipe.batch
    total, step, start = per_epoch * recipe.epochs, 0, time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        if recipe.freeze_norm:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        order, running = rng.permutation(len(images)), torch.zeros(3)
        for k in range(per_epoch):
            _set_lr(opt, recipe, step, total)
            x, targets = make_batch(images, labels, order[k * recipe.batch:(k + 1) * recipe.batch], rng, recipe.flip)
            loss, parts = loss_fn(model(x), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            running += parts
            step += 1
            if log_every and (k + 1) % log_every == 0:
                now = " ".join(f"{n} {v:.4f}" for n, v in zip(part_names, (running / (k + 1)).tolist()))
                log(f"  epoch {epoch + 1} step {k + 1}/{per_epoch}  {now}  "
                    f"{time.perf_counter() - start:.0f} s")
        mean = " ".join(f"{n} {v:.4f}" for n, v in zip(part_names, (running / per_epoch).tolist()))
        note = after_epoch(epoch + 1, ema) if after_epoch else ""
        log(f"epoch {epoch + 1}/{recipe.epochs}  {mean}  {time.perf_counter() - start:.0f} s  {note}")
    return ema


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW for training from nothing; SGD with momentum for fine-tuning a converged model.
    Adam's step is about the learning rate for every weight whatever its gradient, so on a model
    at its optimum it walks every weight off it: a float fine-tune of the demo at 2e-5 for 96
    steps lost 0.4-1.2 points of mAP50-95 with AdamW, and none with SGD at 1e-3 (-0.17 +- 0.13)."""
    groups = param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999))
    raise ValueError(f"optimizer {recipe.optimizer!r}: adamw or sgd")


def _set_lr(opt: torch.optim.Optimizer, recipe: Recipe, step: int, total: int) -> None:
    """Linear warm-up, then a cosine from lr down to lr * final_lr."""
    cos = recipe.final_lr + (1 - recipe.final_lr) * (1 + math.cos(math.pi * step / max(total, 1))) / 2
    lr = recipe.lr * cos * min(1.0, (step + 1) / recipe.warmup_iters)
    for g in opt.param_groups:
        g["lr"] = lr
