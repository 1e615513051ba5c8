"""Squeeze-and-Excitation. Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507.

    z = GAP(x);  s = sigmoid(W2 relu(W1 z));  y = x * s

W1 is C/r x C and W2 is C x C/r, written as 1x1 convolutions on the (B, C, 1, 1) pooled map so
the export is two Conv nodes with no Shape/Gather chains. The paper counts 2C^2/r weights; the
Caffe release also has biases (``bias=True``); the YOLOv5 forks drop them, as we do by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1, reduction_from
from .registry import register_attention


@register_attention(
    "se", aliases=("SE", "SEAttention", "SELayer", "se_block", "SEBlock"), yaml_args=("reduction",)
)
class SqueezeExcite(AttentionModule):
    def __init__(self, channels: int, reduction: int = 16, bias: bool = False, gate: str = "sigmoid") -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {tuple(GATES)}, not {gate!r}")
        hidden = max(channels // reduction, 1)
        self.fc1 = conv1x1(channels, hidden, bias=bias)
        self.act = nn.ReLU()
        self.fc2 = conv1x1(hidden, channels, bias=bias)
        self.gate = GATES[gate]

    def forward(self, x: Tensor) -> Tensor:
        z = x.mean((2, 3), keepdim=True)  # squeeze
        s = self.gate(self.fc2(self.act(self.fc1(z))))  # excitation
        return x * s

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = layer.weights()
        kwargs: dict[str, Any] = {"reduction": reduction_from(channels, w[0][1].shape[0]), "bias": len(w) == 4}
        hard = layer.class_at(*HARD_SIGMOIDS)
        if hard is not None:  # MobileNetV3's SELayer: relu6(x + 3) / 6
            kwargs["gate"] = layer.read("gate", "hard_sigmoid", "hard sigmoid", f"{layer.classes[hard]} at {hard}")
        elif not layer.classes:
            kwargs["gate"] = layer.read("gate", "sigmoid", "sigmoid", None)  # a plain state dict shows no modules
        return kwargs


HARD_SIGMOIDS = ("h_sigmoid", "Hardsigmoid", "HardSigmoid", "hsigmoid", "HSigmoid")


def _hard_sigmoid(x: Tensor) -> Tensor:
    """relu6(x + 3) / 6, written out (Add, Clip, Div) so that every opset and TensorRT take it."""
    return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": _hard_sigmoid}
