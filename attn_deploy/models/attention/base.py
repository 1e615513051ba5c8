"""What every attention module shares: the checkpoint view of a fork's layer, small layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Reading:
    """One choice a fork's checkpoint had to answer that our module cannot see in the tensors
    alone (CBAM's plane order, SE's gate): what was taken and what in the checkpoint said so.
    ``evidence`` None means nothing did: the reading is a guess, and the loader warns."""

    what: str
    taken: str
    evidence: str | None

    @property
    def certain(self) -> bool:
        return self.evidence is not None

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "taken": self.taken, "evidence": self.evidence, "certain": self.certain}


@dataclass
class ForkLayer:
    """One attention layer as a fork's checkpoint holds it: names and tensors, never code.

    ``cls`` is the fork's class name (None for a plain state dict), ``tensors`` are in
    state-dict order with names relative to the layer, ``attrs`` and ``classes`` hold the
    plain attributes and the class names of submodules by dotted path ("" is the layer).
    """

    cls: str | None
    tensors: dict[str, Tensor]
    attrs: dict[str, Any] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    readings: list[Reading] = field(default_factory=list)

    def read(self, what: str, value: Any, taken: str, evidence: str | None) -> Any:
        """Record how ``what`` was read (``taken``, in words) and from which ``evidence``; returns ``value``."""
        self.readings.append(Reading(what, taken, evidence))
        return value

    def has_part(self, name: str) -> str | None:
        """The first tensor or submodule path with a part named ``name`` (``ca.f1.weight`` has ``f1``)."""
        return next((p for p in [*self.tensors, *self.classes] if name in p.split(".")), None)

    def class_at(self, *names: str) -> str | None:
        """The path of the first submodule whose class is one of ``names`` (a training checkpoint's)."""
        return next((p for p, c in self.classes.items() if p and c in names), None)

    def shape(self, name: str) -> tuple[int, ...] | None:
        t = self.tensors.get(name)
        return tuple(t.shape) if t is not None else None

    def has(self, prefix: str) -> bool:
        """Whether a tensor or a submodule lives at or under ``prefix``."""
        paths = list(self.tensors) + list(self.classes)
        return any(p == prefix or p.startswith(prefix + ".") for p in paths)

    def weights(self) -> list[tuple[str, Tensor]]:
        """Tensors of rank >= 1 that are not BatchNorm statistics, in order."""
        skip = ("running_mean", "running_var", "num_batches_tracked")
        return [(k, t) for k, t in self.tensors.items() if not k.endswith(skip) and t.dim()]


class AttentionModule(nn.Module):
    """Base class: a module that maps (B, C, H, W) to the same shape."""

    @classmethod
    def fork_kwargs(cls, channels: int, layer: ForkLayer) -> dict[str, Any]:
        """Constructor keywords reproducing the variant a fork's checkpoint was trained with."""
        return {}


def conv1x1(c_in: int, c_out: int, bias: bool = True, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=bias, groups=groups)


class HardSwish(nn.Module):
    """x * ReLU6(x + 3) / 6, written out so it exports as Add/Clip/Div/Mul on any opset."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def spatial_count(x: Tensor) -> Tensor:
    """H*W of a (B, C, H, W) tensor as a float tensor (1, 1, 1, 1) that follows dynamic shapes.

    Python ints taken from ``x.shape`` are frozen by some exporters; a reduction over a
    ones-map of the input's size is not.
    """
    return torch.ones_like(x[:1, :1]).sum((2, 3), keepdim=True)


def reduction_from(channels: int, hidden: int) -> int:
    """The reduction ratio r with channels // r == hidden (how every fork sizes its MLP)."""
    r = max(channels // max(hidden, 1), 1)
    if channels // r != hidden:
        raise ValueError(f"no reduction ratio gives {hidden} hidden units from {channels}")
    return r
