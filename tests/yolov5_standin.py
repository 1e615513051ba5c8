"""The stand-in YOLOv5 fork (``tests/forks/yolov5``, real files) made importable for
checkpoint tests.

Training checkpoints are pickles of a fork's classes under its module paths
(``models.yolo.DetectionModel``, ``models.common.Conv``, YOLOAir's
``models.Models.research.CA`` ...). The fork's files are imported once, here; ``install()``
puts its modules in ``sys.modules`` so that ``torch.save`` writes a checkpoint exactly as the
fork's own train.py would, and ``uninstall()`` takes them out again, so that nothing of ours
finds them by accident. The classes are written in the forks' own forms (Linear layers on
pooled vectors, adaptive pools, the batch-folded Shuffle Attention, SAN's Covpool/Sqrtm,
CCNet's INF helper), independently of attn_deploy's modules, so a rebuilt model that matches
them proves the mapping; ``attn-deploy verify --fork`` runs the same files in a subprocess.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
import types
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORK = Path(__file__).resolve().parent / "forks" / "yolov5"


def _import_fork() -> dict[str, types.ModuleType]:
    sys.path.insert(0, str(FORK))
    try:
        importlib.import_module("models.yolo")
    finally:
        sys.path.remove(str(FORK))
    found = {n: m for n, m in sys.modules.items() if n == "models" or n.startswith("models.")}
    for name in found:
        del sys.modules[name]
    return found


MODULES: dict[str, types.ModuleType] = _import_fork()
_yolo, _common = MODULES["models.yolo"], MODULES["models.common"]
DetectionModel, Model, CLASSES, BRANCH_A = _yolo.DetectionModel, _yolo.Model, _yolo.CLASSES, _yolo.BRANCH_A
Conv, h_sigmoid, h_swish = _common.Conv, _common.h_sigmoid, _common.h_swish


def _place(path: str):
    """Decorator: make a class (or function) of a test importable as ``path`` for pickle."""

    def wrap(obj: Any) -> Any:
        module, _, name = path.rpartition(".")
        obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
        MODULES.setdefault(module, types.ModuleType(module))
        setattr(MODULES[module], name, obj)
        return obj

    return wrap


def install() -> None:
    sys.modules.update(MODULES)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """The fork installed for a while; left as it was found (a module fixture may hold it)."""
    before = all(sys.modules.get(name) is module for name, module in MODULES.items())
    install()
    try:
        yield
    finally:
        if not before:
            uninstall()


def uninstall() -> None:
    for name in MODULES:
        sys.modules.pop(name, None)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking weights: BN statistics and zero-initialised gates made non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "cweight", "sweight")) or "bn" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.05)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def training_checkpoint(model: nn.Module, ema: bool = True) -> dict[str, Any]:
    """What yolov5's train.py saves (after strip_optimizer: no optimizer state)."""
    import numpy as np

    half = deepcopy(model).half()
    return {
        "epoch": -1, "best_fitness": np.array([0.4213]), "model": None if ema else half,
        "ema": half if ema else None, "updates": 1234, "optimizer": None,
        "opt": {"weights": "yolov5n.pt", "cfg": "models/yolov5n.yaml", "epochs": 100, "imgsz": 640},
        "git": {"remote": "https://github.com/ultralytics/yolov5", "branch": "master", "commit": "915bbf2"},
        "date": "2026-11-25T10:00:00",
    }

