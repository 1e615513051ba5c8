"""Putting a checkpoint's tensors into our modules, layer by layer, by structure.

Forks name the submodules of the same block differently (``fc.0`` or ``l1`` for SE's first
layer), write Linear where we write a 1x1 conv, and differ in choices no tensor shows (CBAM's
plane order, SimAM's lambda). Per yaml layer: an attention layer is first rebuilt in the
variant the fork trained (``fork_kwargs`` reads the record's classes, attributes and
shapes); then tensors pair up by name when the names agree, else by order, and each pair must
have the same shape up to size-1 dimensions. Anything else fails naming the layer.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from attn_deploy.errors import AttnDeployWarning, UserError, library_text
from attn_deploy.models.attention import AttentionModule, ForkLayer
from attn_deploy.models.checkpoint import Checkpoint
from attn_deploy.models.heads import Detector

COUNTER = "num_batches_tracked"


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def pair_tensors(where: str, ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> list[tuple[str, str]]:
    """(our name, their name) for every tensor of a layer; a user error when they do not line up."""
    mine = [k for k in ours if not k.endswith(COUNTER)]
    other = [k for k in theirs if not k.endswith(COUNTER)]
    if sorted(mine) == sorted(other):
        pairs = [(k, k) for k in mine]
    elif len(mine) == len(other):
        pairs = list(zip(mine, other))
    else:
        raise UserError(
            f"{where}: the checkpoint has {len(other)} tensors ({_listing(other, theirs)}), "
            f"this module expects {len(mine)} ({_listing(mine, ours)})"
        )
    for a, b in pairs:
        sa, sb = tuple(ours[a].shape), tuple(theirs[b].shape)
        if sa != sb and not (_squeezed(sa) == _squeezed(sb) and ours[a].numel() == theirs[b].numel()):
            raise UserError(f"{where}: checkpoint tensor {b} {list(sb)} does not fit {a} {list(sa)}")
    return pairs


def _listing(names: list[str], tensors: dict[str, Tensor], n: int = 4) -> str:
    items = [f"{k} {list(tensors[k].shape)}" for k in names[:n]]
    return ", ".join(items) + (", ..." if len(names) > n else "")


def _fork_layer(ckpt: Checkpoint, i: int, yaml_name: str) -> ForkLayer:
    record = ckpt.records.get(i)
    if record is None:  # a plain state dict: the yaml's class name is the only hint of the fork
        return ForkLayer(yaml_name, ckpt.layers.get(i, {}))
    return ForkLayer(record.class_name, ckpt.layers.get(i, {}), record.attrs(), record.classes())


def _adapt_attention(model: Detector, ckpt: Checkpoint, i: int) -> list[dict[str, Any]]:
    """Rebuild attention layer i in the variant the checkpoint's fork used; how each choice
    the tensors leave open was read, as sidecar rows."""
    layer = model.model[i]
    c1 = model.out_channels[i]  # an attention layer keeps its input's channel count
    fork = _fork_layer(ckpt, i, layer.type)
    try:
        kwargs = ckpt.variants[i] if i in ckpt.variants else type(layer).fork_kwargs(c1, fork)
        new = type(layer)(c1, **kwargs)
    except (ValueError, TypeError, IndexError, KeyError, StopIteration) as e:
        raise UserError(f"layer {i} ({fork.cls[:40]}): cannot read this fork's variant: {library_text(e, 100)}") from e
    new.i, new.f, new.type = layer.i, layer.f, layer.type
    _keep_norm_settings(layer, new)
    new.variant = dict(kwargs)  # written into our own checkpoints, so that a reload needs no reading
    model.model[i] = new
    return [{"layer": i, "module": fork.cls, **r.to_dict()} for r in fork.readings]


def _keep_norm_settings(old: nn.Module, new: nn.Module) -> None:
    """The rebuilt layer's BatchNorm keeps the family's settings (eps 1e-3, momentum 0.03, set on
    every BatchNorm at build, as yolov5's and ultralytics' initialize_weights do): a fresh module
    has torch's 1e-5, which our own checkpoints and plain state dicts (no record to read eps from)
    then carried, 0.06 px away from the model as trained. A fork's record still has the last word
    (``_copy_norm_eps``)."""
    norms = [m for m in old.modules() if type(m) is nn.BatchNorm2d]
    if norms:
        for m in new.modules():
            if type(m) is nn.BatchNorm2d:
                m.eps, m.momentum = norms[0].eps, norms[0].momentum


def load_quantized(model: Detector, ckpt: Checkpoint) -> Detector:
    """Our quantized checkpoint: its attention variants applied, then folded, quantized and
    filled (``models/quantized.py``); its tensors are the folded model's, name for name."""
    from attn_deploy.models.quantized import restore_quantized

    for i in sorted(ckpt.variants):
        if isinstance(model.model[i], AttentionModule):
            _adapt_attention(model, ckpt, i)
    tensors = {f"model.{i}.{k}": t.float() if t.is_floating_point() else t
               for i, layer in ckpt.layers.items() for k, t in layer.items()}
    net = restore_quantized(model, ckpt.qat["modelopt"], tensors)
    if ckpt.names and len(ckpt.names) == net.detect.nc:
        net.names = list(ckpt.names)
    return net


def load_checkpoint_weights(model: Detector, ckpt: Checkpoint) -> None:
    """Copy every tensor of ``ckpt`` into ``model`` (in place), layer by layer."""
    theirs_layers, ours_layers = sorted(ckpt.layers), list(range(len(model.model)))
    extra = [i for i in theirs_layers if i not in ours_layers]
    if extra:
        raise UserError(f"{ckpt.path}: the checkpoint has layers {extra} that the model does not ({len(ours_layers)} layers)")
    state: dict[str, Tensor] = OrderedDict()
    model.readings = []
    for i in ours_layers:
        if isinstance(model.model[i], AttentionModule):
            model.readings += _adapt_attention(model, ckpt, i)
        layer = model.model[i]
        where = f"{ckpt.path.name}: layer {i} ({layer.type})"
        ours, theirs = layer.state_dict(), ckpt.layers.get(i, {})
        if not theirs and ours:
            raise UserError(f"{where}: the checkpoint has no tensors for this layer")
        pairs = pair_tensors(where, ours, theirs)
        new = OrderedDict(ours)  # BatchNorm's batch counters stay ours: eval never reads them
        for a, b in pairs:
            new[a] = theirs[b].reshape(ours[a].shape).to(ours[a].dtype)
        state.update({f"model.{i}.{k}": t for k, t in new.items()})
        _copy_norm_eps(layer, i, ckpt, pairs)
    model.load_state_dict(state, strict=True)
    _check_stride(model, ckpt)
    if ckpt.names and len(ckpt.names) == model.detect.nc:
        model.names = list(ckpt.names)


def _copy_norm_eps(layer: nn.Module, i: int, ckpt: Checkpoint, pairs: list[tuple[str, str]]) -> None:
    """BatchNorm epsilon is not a tensor: take it from the record (yolov5 sets 1e-3 everywhere)."""
    record = ckpt.records.get(i)
    if record is None:
        return
    attrs = record.attrs()
    modules = dict(layer.named_modules())
    for ours, theirs in pairs:
        if ours.endswith(".weight") and isinstance(modules.get(ours[:-7]), nn.modules.batchnorm._BatchNorm):
            eps = attrs.get(theirs[:-7] + ".eps")
            if isinstance(eps, float):
                modules[ours[:-7]].eps = eps


def _check_stride(model: Detector, ckpt: Checkpoint) -> None:
    if ckpt.stride and [float(s) for s in ckpt.stride] != model.stride.tolist():
        raise UserError(
            f"{ckpt.path}: the checkpoint's strides {ckpt.stride} differ from the model's {model.stride.tolist()}"
        )


def warn_guessed(model: Detector, ckpt: Checkpoint) -> None:
    """One warning line naming the choices no tensor, name or class of the checkpoint showed."""
    guessed = [r for r in getattr(model, "readings", []) if not r["certain"]]
    if not guessed:
        return
    shown = ", ".join(f"layer {r['layer']} {r['module']} {r['what']} as {r['taken']}" for r in guessed[:3])
    more = f" and {len(guessed) - 3} more" if len(guessed) > 3 else ""
    warnings.warn(f"{ckpt.path.name}: {len(guessed)} choice(s) its tensors leave open were guessed: {shown}{more}; "
                  f"check them with 'attn-deploy verify --weights {ckpt.path.name} --fork DIR'",
                  AttnDeployWarning, stacklevel=3)
