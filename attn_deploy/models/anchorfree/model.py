"""The anchor-free detector assembled from an ultralytics-format definition."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attn_deploy.errors import UserError
from attn_deploy.files import check_expansion, read_yaml
from attn_deploy.models.anchorfree.head import Detect
from attn_deploy.models.anchorfree.parser import check_cfg, parse_model, pick_scaling, run_layers
from attn_deploy.models.rows import LayerWatch, trial_failure


class AnchorFreeModel(nn.Module):
    """A YOLOv8/11/12/26-style detector; ``model.{i}`` is yaml row i, as in ultralytics' state dicts.

    Eval ``forward`` returns (B, 4 + nc, anchors): xywh in input pixels, then class
    probabilities. ``scale`` is the letter whose multipliers were used (None without scales).
    """

    def __init__(
        self, cfg: dict[str, Any], name: str = "model", scale: str | None = None, nc: int | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__()
        where = source or name
        if not isinstance(cfg, dict):
            raise UserError(f"{where}: the model definition is not a mapping")
        check_expansion(cfg, where)
        self.yaml = copy.deepcopy(cfg)
        self.name = name
        for key in ("nc", "backbone", "head"):
            if key not in self.yaml:
                raise UserError(f"{where}: the model definition has no {key!r}")
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        check_cfg(self.yaml, where)
        scaling = pick_scaling(self.yaml, scale, where)
        self.scale = self.yaml["scale"] = scaling.scale
        ch = self.yaml.setdefault("ch", 3)
        self.model, self.save, self.rows, self.out_channels = parse_model(
            copy.deepcopy(self.yaml), ch, scaling, where)
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.readings: list[dict[str, Any]] = []  # how a checkpoint's open choices were read (mapping.py)
        if not isinstance(self.model[-1], Detect):
            raise UserError(f"{where}: the last row must be Detect")
        strides = _trial_strides(self.model, self.save, ch, where)
        self.detect.stride.copy_(torch.tensor(strides))
        self.stride = self.detect.stride
        self.detect.bias_init(strides)
        for m in self.modules():  # ultralytics' training-time BatchNorm settings
            if type(m) is nn.BatchNorm2d:
                m.eps, m.momentum = 1e-3, 0.03

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, x: Tensor) -> Any:
        return run_layers(self.model, self.save, x)


def _trial_strides(layers: nn.Sequential, save: list[int], ch: int, where: str, s: int = 128) -> list[float]:
    """Strides from the heights of Detect's inputs on one s x s zero image, in eval mode.

    A real forward at 128 costs little (yolo11x: about 0.5 s on one CPU thread); the same
    run on the meta device was slower (BatchNorm goes through decompositions there). Under a
    ``torch.device('meta')`` context the image is on the meta device too, and nothing is computed."""
    seen: list[int] = []
    hook = layers[-1].register_forward_pre_hook(lambda m, inp: seen.extend(x.shape[-2] for x in inp[0]))
    was_training = layers.training
    try:
        with torch.no_grad(), LayerWatch(layers) as watch:
            run_layers(layers.eval(), save, torch.zeros(1, ch, s, s))
    except Exception as e:  # noqa: BLE001 - rows that do not fit together; a user block's code
        trial_failure(where, s, e, watch)
        raise
    finally:
        hook.remove()
        layers.train(was_training)
    return [s / h for h in seen]


def load_anchor_free_yaml(path: str | Path) -> dict[str, Any]:
    """An ultralytics-format model yaml as a dict; a user error when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model yaml not found: {p}")
    cfg = read_yaml(p, "model yaml")
    if not isinstance(cfg, dict):
        raise UserError(f"{p} does not hold a model definition (a mapping with nc, scales, backbone, head)")
    return cfg


_SCALE_IN_NAME = re.compile(r"yolo(?:v)?\d+([nslmx])(?![a-z0-9])", re.IGNORECASE)


def guess_scale(name: str) -> str | None:
    """The scale letter a name carries (``yolov8n``, ``yolo11s-cbam``, ``yolo26x.yaml``), if any."""
    m = _SCALE_IN_NAME.search(name)
    return m.group(1).lower() if m else None


def build_anchor_free(
    cfg: dict[str, Any] | str | Path, name: str = "model", scale: str | None = None, nc: int | None = None,
    seed: int = 0,
) -> AnchorFreeModel:
    """A model from a definition (dict or yaml path), initialised from a fixed seed, in eval mode."""
    source = None
    if not isinstance(cfg, dict):
        source, cfg = str(cfg), load_anchor_free_yaml(cfg)
    scale = scale or cfg.get("scale") or guess_scale(Path(source).stem if source else name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AnchorFreeModel(cfg, name=name, scale=scale, nc=nc, source=source).eval()
