"""Quantization-aware fine-tuning: the model folded, INT8 fake quantization put in
(``models/quantized.py``), its activation ranges calibrated, then a short, low-rate run of our
trainer (YOLOv5's loss, or the anchor-free one) on the train split, BatchNorm statistics kept,
so that the weights learn to live with INT8 rounding. What comes out is still a PyTorch model;
``attn_deploy/qat.py`` exports it to Q/DQ and scores it as calib scores a graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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

    def trainer(self) -> Recipe:
        """The trainer's recipe: SGD with momentum, no EMA (decay 0.999 measured no better: 2.48
        against 2.47 points), the cosine to 5 %, the norms frozen."""
        return Recipe(imgsz=self.imgsz, epochs=self.epochs, batch=self.batch, lr=self.lr, final_lr=0.05,
                      warmup_iters=self.warmup_iters, ema_decay=0.0, seed=self.seed, freeze_norm=True,
                      optimizer="sgd")


def fine_tune(model: nn.Module, data: Path, calibration: np.ndarray, recipe: QatRecipe,
              log: Callable[[str], None] = lambda _: None) -> nn.Module:
    """A quantized copy of ``model`` calibrated on ``calibration`` and fine-tuned on ``data``'s
    train split (``model`` is left as is). Calibration and training run on the recipe's thread
    count: a sum split another way rounds apart, and a fine-tune amplifies it (the same run
    scored 0.09 and 0.60 points of damage when the process's thread count differed), and the
    same command must make the same model."""
    before = torch.get_num_threads()
    torch.set_num_threads(recipe.trainer().threads)
    try:
        quantized = quantize_model(model, calibration)
        train(quantized, data, recipe.trainer(), log=log)
    finally:
        torch.set_num_threads(before)
    return quantized.eval()
