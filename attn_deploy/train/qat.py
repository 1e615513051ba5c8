"""Quantization-aware fine-tuning: the model folded, INT8 fake quantization put in
(``models/quantized.py``), its activation ranges calibrated, then a short, low-rate run of our
trainer (YOLOv5's loss, or the anchor-free one) on the train split, BatchNorm statistics kept,
so that the weights learn to live with INT8 rounding. What comes out is still a PyTorch model;
``attn_deploy/qat.py`` exports it to Q/DQ and scores it as calib scores a graph.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attn_deploy.models.quantized import quantize_model
from attn_deploy.train.trainer import Recipe, train


@dataclass(frozen=True)
class QatRecipe:
    epochs: int = 2
    lr: float = 1e-3  # SGD with momentum (``trainer.make_optimizer``: why not AdamW)
    batch: int = 16
    imgsz: int = 640
    warmup_iters: int = 10
    seed: int = 0
    holdout: int = 0  # the train split's first images, held out to choose the epoch on

    def trainer(self) -> Recipe:
        """The trainer's recipe: SGD with momentum, no EMA (decay 0.999 measured no better: 2.48
        against 2.47 points; 0.98 neither: 0.87 against 0.49), the cosine to 5 %, the norms frozen."""
        return Recipe(imgsz=self.imgsz, epochs=self.epochs, batch=self.batch, lr=self.lr, final_lr=0.05,
                      warmup_iters=self.warmup_iters, ema_decay=0.0, seed=self.seed, freeze_norm=True,
                      optimizer="sgd", holdout=self.holdout)


@dataclass
class Selection:
    """The epoch kept: each epoch's damage on the held-out train images, and the best one's number."""

    images: int
    damage: list[float] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """The first epoch with the least damage (1-based; 0 before any)."""
        return 1 + self.damage.index(min(self.damage)) if self.damage else 0

    def to_dict(self) -> dict[str, Any]:
        return {"held_out_images": self.images, "damage_by_epoch": [round(d, 4) for d in self.damage],
                "epoch": self.epoch}


def fine_tune(model: nn.Module, data: Path, calibration: np.ndarray, recipe: QatRecipe,
              log: Callable[[str], None] = lambda _: None,
              judge: Callable[[nn.Module], float] | None = None) -> tuple[nn.Module, Selection | None]:
    """A quantized copy of ``model`` calibrated on ``calibration`` and fine-tuned on ``data``'s
    train split (``model`` is left as is). Calibration and training run on the recipe's thread
    count: a sum split another way rounds apart, and a fine-tune amplifies it (the same run
    scored 0.09 and 0.60 points of damage when the process's thread count differed), and the
    same command must make the same model.

    ``judge`` (the damage of a quantized model on the ``recipe.holdout`` images the fine-tune
    does not see) scores the weights after every epoch, and the best epoch's are kept: from one
    epoch to the next the INT8 damage scatters by +- 0.5 points (yolov5n-ca, 6 epochs: -0.12,
    -0.04, 0.97, 0.86 after epochs 3-6 on the val images), far more than a score's error, and
    300 held-out train images rank the epochs as the val images do (-0.50, 0.08, ... there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(recipe.trainer().threads)
    selection = Selection(recipe.holdout) if judge is not None else None
    best: dict[str, torch.Tensor] | None = None

    def after_epoch(epoch: int, ema: Any) -> str:
        nonlocal best
        if selection is None:
            return ""
        damage = judge(ema.ema)  # the decay is 0: the average is the weights as they are
        selection.damage.append(damage)
        if selection.epoch == epoch:
            best = copy.deepcopy(ema.ema.state_dict())
        return f"damage {damage:.2f} on {recipe.holdout} held-out train images"

    try:
        quantized = quantize_model(model, calibration)
        train(quantized, data, recipe.trainer(), log=log, after_epoch=after_epoch)
        if best is not None:
            quantized.load_state_dict(best)
    finally:
        torch.set_num_threads(before)
    return quantized.eval(), selection
