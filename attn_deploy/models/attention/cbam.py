"""Convolutional Block Attention Module. Woo et al., "CBAM: Convolutional Block Attention
Module", ECCV 2018, arXiv 1807.06521.

    M_c = sigmoid(MLP(GAP(x)) + MLP(GMP(x)));  x' = x * M_c
    M_s = sigmoid(BN(conv7x7([max_c(x'); mean_c(x')])));  y = x' * M_s

Defaults follow the official code (MLP with bias and ReLU; a bias-free 7x7 conv with BN; the
planes stacked max first). The forks differ in exactly these choices, so each is a keyword:
YOLOAir's ``CBAM`` uses LeakyReLU(0.1), a biased conv without BN and [mean; max]; the
tutorials' ``CBAM`` is bias-free throughout; External-Attention's ``CBAMBlock`` adds x back.
ultralytics' ``CBAM`` (RTMDet's channel gate) replaces the MLP by one biased C->C 1x1 conv on
the average pool alone, M_c = sigmoid(conv1x1(GAP(x))) (``channel_gate="fc"``), and stacks
[mean; max] for a bias-free conv without BN; its ``ChannelAttention`` row is that channel gate
alone (``spatial=False``), built here by the registered variant below.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import AttentionModule, ForkLayer, conv1x1, reduction_from
from .registry import register_attention, register_variant

CHANNEL_GATES = ("mlp", "fc")


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int, bias: bool, negative_slope: float) -> None:
        super().__init__()
        self.fc1 = conv1x1(channels, max(channels // reduction, 1), bias=bias)
        self.act = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
        self.fc2 = conv1x1(max(channels // reduction, 1), channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return torch.sigmoid(avg + mx)


class ChannelFC(nn.Module):
    """RTMDet's (and ultralytics') channel gate: one biased C->C 1x1 conv on the average pool."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = conv1x1(channels, channels, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int, bias: bool, norm: bool, max_first: bool) -> None:
        super().__init__()
        self.max_first = max_first
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        mx, avg = x.amax(1, keepdim=True), x.mean(1, keepdim=True)
        planes = (mx, avg) if self.max_first else (avg, mx)
        return torch.sigmoid(self.bn(self.conv(torch.cat(planes, 1))))


@register_attention(
    "cbam", aliases=("CBAM", "CBAMBlock", "cbam_block"), yaml_args=("reduction", "kernel_size")
)
class CBAM(AttentionModule):
    def __init__(
        self, channels: int, reduction: int = 16, kernel_size: int = 7, bias: bool = True,
        negative_slope: float = 0.0, spatial_bias: bool = False, spatial_norm: bool = True,
        max_first: bool = True, residual: bool = False, channel_gate: str = "mlp", spatial: bool = True,
    ) -> None:
        super().__init__()
        if channel_gate not in CHANNEL_GATES:
            raise ValueError(f"channel_gate must be one of {CHANNEL_GATES}, not {channel_gate!r}")
        self.residual = residual
        self.channel: nn.Module = (ChannelGate(channels, reduction, bias, negative_slope) if channel_gate == "mlp"
                                   else ChannelFC(channels))
        self.spatial = SpatialGate(kernel_size, spatial_bias, spatial_norm, max_first) if spatial else None

    def forward(self, x: Tensor) -> Tensor:
        y = x * self.channel(x)
        if self.spatial is not None:
            y = y * self.spatial(y)
        return x + y if self.residual else y

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        w = layer.weights()
        conv_i = next((i for i, (_, t) in enumerate(w) if t.dim() == 4 and t.shape[:2] == (1, 2)), len(w))
        fc = _one_biased_conv(channels, w[:conv_i])  # ultralytics' channel gate, not an MLP
        if conv_i == len(w) and not fc:
            raise ValueError("no 2->1 spatial convolution, and the channel part is not one C->C conv")
        after = len(w) - conv_i - 1  # conv bias (1) and/or BN affine (2) after the 7x7 conv
        source = _source(layer, fc)
        kwargs = {
            "reduction": 1 if fc else reduction_from(channels, w[0][1].shape[0]),
            "kernel_size": w[conv_i][1].shape[-1] if conv_i < len(w) else 7,
            "bias": conv_i == 4,
            "negative_slope": _slope(layer, source),
            "spatial_bias": after % 2 == 1,
            "spatial_norm": after >= 2,
            "residual": layer.cls == "CBAMBlock" or layer.has("ca.se"),
            "channel_gate": "fc" if fc else "mlp",
            "spatial": conv_i < len(w),
        }
        if kwargs["spatial"]:
            max_first = source[1] if source else True  # unknown: the official code's order
            kwargs["max_first"] = layer.read(
                "spatial gate planes", max_first, "[max; mean]" if max_first else "[mean; max]",
                source[0] if source else None)
        return kwargs


# Whose CBAM a checkpoint holds, told by the names it saved, and the order in which that
# source stacks the spatial gate's planes (True: [max; mean]). The paper writes [avg; max];
# the official code stacks [max; mean]; the forks split. First match wins.
_SOURCES: tuple[tuple[str, str, bool], ...] = (
    ("shared_MLP", "YOLOAir's CBAM (channel_attention.shared_MLP)", False),
    ("f1", "the tutorial CBAM (ChannelAttention f1/f2)", False),
    ("se", "External-Attention's CBAMBlock (ca.se)", True),
    ("mlp", "the official CBAM (ChannelGate.mlp)", True),
    ("fc1", "attn-deploy's CBAM (channel.fc1)", True),
)


def _source(layer: ForkLayer, fc: bool) -> tuple[str, bool] | None:
    """(the evidence, max first?) from the checkpoint's names, or None when they say nothing."""
    if fc:
        return "ultralytics' CBAM (one C->C channel conv)", False
    for part, source, max_first in _SOURCES:
        if (path := layer.has_part(part)) is not None:
            return f"{source}: {path}", max_first
    return None


def _slope(layer: ForkLayer, source: tuple[str, bool] | None) -> float:
    """The channel MLP's activation: a saved LeakyReLU slope, a ReLU the classes show, or the source's."""
    slope = next((v for k, v in layer.attrs.items() if k.endswith("negative_slope")), None)
    if slope is not None:
        return float(slope)
    if layer.class_at("ReLU") is not None:
        return 0.0
    yoloair = source is not None and source[0].startswith("YOLOAir")
    return layer.read("channel MLP activation", 0.1 if yoloair else 0.0,
                      "LeakyReLU(0.1)" if yoloair else "ReLU", source[0] if source else None)


def _one_biased_conv(channels: int, w: list[tuple[str, Tensor]]) -> bool:
    """Whether a channel part is one biased C->C 1x1 conv (weight, bias), not an MLP's two layers."""
    return (len(w) == 2 and tuple(w[0][1].shape) in ((channels, channels, 1, 1), (channels, channels))
            and tuple(w[1][1].shape) == (channels,))


@register_variant("cbam", "ChannelAttention")
class ChannelAttention(CBAM):
    """ultralytics' ``ChannelAttention`` row: CBAM's channel gate alone, in RTMDet's form."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(channels, **{"channel_gate": "fc", "spatial": False, **kwargs})
