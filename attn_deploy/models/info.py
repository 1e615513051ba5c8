"""Parameter count, GFLOPs and a per-layer table of a model at an input size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from attn_deploy.models.heads import Detector, head_of


@dataclass
class LayerInfo:
    index: int
    source: int | list[int]
    number: int
    module: str
    args: list[Any]
    params: int
    gflops: float
    shape: list[int]


@dataclass
class ModelInfo:
    """``gflops`` counts convolutions and matrix products (2 FLOPs per multiply-add), as
    yolov5's thop-based figure does up to its BatchNorm and activation terms."""

    name: str
    imgsz: tuple[int, int]
    params: int
    gflops: float
    layers: list[LayerInfo] = field(default_factory=list)
    family: str = ""
    head: dict[str, Any] = field(default_factory=dict)  # heads.Head as a dict, with its description

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _output_shapes(model: Detector) -> tuple[dict[int, list[int]], list[Any]]:
    shapes: dict[int, list[int]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, i=i: shapes.__setitem__(i, list(out.shape)))
        for i, m in enumerate(model.model)
    ]
    return shapes, hooks


def model_info(model: Detector, imgsz: tuple[int, int] = (640, 640)) -> ModelInfo:
    """Measure ``model`` on one zero image of ``imgsz`` (H, W): params, GFLOPs, layer table."""
    shapes, hooks = _output_shapes(model)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(torch.zeros(1, model.yaml["ch"], *imgsz))
    finally:
        for h in hooks:
            h.remove()
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    layers = [
        LayerInfo(
            index=row.index, source=row.source, number=row.number, module=row.name, args=row.args,
            params=sum(p.numel() for p in m.parameters()),
            gflops=per_module.get(f"{root}.model.{row.index}", 0) / 1e9,
            shape=shapes.get(row.index, []),
        )
        for row, m in zip(model.rows, model.model)
    ]
    head = head_of(model)
    return ModelInfo(
        name=model.name, imgsz=tuple(imgsz), params=sum(p.numel() for p in model.parameters()),
        gflops=counter.get_total_flops() / 1e9, layers=layers, family=head.family,
        head={**head.to_dict(), "description": head.describe()},
    )
