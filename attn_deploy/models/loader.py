"""One entry point for every way a user names a model: zoo name, yaml file, checkpoint."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from attn_deploy.blocks import BlockError, UserBlock, forget, load_entry_points, load_files, registered
from attn_deploy.errors import UserError
from attn_deploy.models.anchorfree import AnchorFreeModel, guess_scale
from attn_deploy.models.checkpoint import Checkpoint, read_checkpoint, warn_ignored
from attn_deploy.models.heads import Detector
from attn_deploy.models.mapping import load_checkpoint_weights, load_quantized, warn_guessed
from attn_deploy.models.rows import strip_nn
from attn_deploy.models.yolo import build_model, load_yaml
from attn_deploy.models.zoo import SEED, create_model


def load_model(
    model: str | None = None, cfg: str | Path | None = None, weights: str | Path | None = None,
    nc: int | None = None, blocks: list[str | Path] | tuple[str | Path, ...] = (),
) -> Detector:
    """A model in eval mode from ``--model``, ``--cfg`` and/or ``--weights``.

    ``blocks`` are the user's block files (``--blocks``), imported first, with the installed
    packages' ``attn_deploy.blocks`` entry points (``attn_deploy/blocks.py``).

    A training checkpoint carries its own yaml, so it needs neither name nor yaml; a plain
    state dict needs one of them. When both a name (or yaml) and a checkpoint are given, the
    named architecture is built and the checkpoint's tensors must fit it, layer by layer.
    A yaml in ultralytics' anchor-free format (YOLOv8 to YOLO26) builds that family.
    """
    if model and cfg:
        raise UserError("give --model or --cfg, not both")
    load_blocks(blocks)
    ckpt = read_checkpoint(weights) if weights else None
    if ckpt is not None:
        nc = _checkpoint_nc(ckpt) if nc is None else nc
    if model:
        net = create_model(model, nc=nc)
    elif cfg:
        net = build_from_yaml(load_yaml(cfg), Path(cfg).stem, nc=nc, source=str(cfg))
    elif ckpt is not None and ckpt.yaml is not None:
        net = build_from_yaml(ckpt.yaml, ckpt.path.stem, nc=nc, source=f"{ckpt.path} (its yaml)")
    elif ckpt is not None:
        raise UserError(f"{ckpt.path} is a plain state dict: name its architecture with --model or --cfg")
    else:
        raise UserError("no model given: use --model NAME, --cfg YAML or --weights FILE")
    if ckpt is not None and ckpt.qat is not None:
        return load_quantized(net, ckpt).eval()
    if ckpt is not None:
        load_checkpoint_weights(net, ckpt)
        if ckpt.ignored or ckpt.machinery:
            warn_ignored(ckpt)
        warn_guessed(net, ckpt)
    return net.eval()


def load_blocks(files: list[str | Path] | tuple[str | Path, ...] = ()) -> list[UserBlock]:
    """Register the installed packages' blocks and those of ``files``; a name that a built-in
    block already has is refused (ours would be built for it, silently)."""
    load_entry_points()
    found = load_files(files)
    for entry in registered():
        taken = sorted(n for n in entry.yaml_names if is_builtin(n))
        if taken:
            forget(entry)
            raise BlockError(f"{entry.origin}: block {entry.cls.__name__}: {taken[0]!r} is a built-in block's name",
                             "register it under another name, and write that name in the yaml")
    return found


def is_builtin(name: str) -> bool:
    """Whether a yaml module name resolves to one of our own blocks, in either family."""
    from attn_deploy.models import yolo
    from attn_deploy.models.anchorfree import parser
    from attn_deploy.models.attention import find_attention

    tables = (yolo.CHANNEL_BLOCKS, yolo.OTHER_BLOCKS, parser.CHANNEL_BLOCKS, parser.OTHER_BLOCKS)
    return any(strip_nn(name) in t for t in tables) or find_attention(name) is not None


def is_anchor_free(cfg: dict[str, Any]) -> bool:
    """Whether a yaml is in ultralytics' anchor-free format: no ``anchors``, and ``scales`` or
    a last row ``Detect`` with no anchors among its arguments (YOLOv5's names ``[nc, anchors]``)."""
    if not isinstance(cfg, dict) or "anchors" in cfg:
        return False
    if "scales" in cfg:
        return True
    head = cfg.get("head")
    last = head[-1] if isinstance(head, list) and head else None
    return (isinstance(last, list) and len(last) == 4 and last[2] == "Detect"
            and isinstance(last[3], list) and len(last[3]) <= 1)


def build_from_yaml(cfg: dict[str, Any], name: str, nc: int | None = None, source: str | None = None) -> Detector:
    """YOLOv5's anchor-based model or an anchor-free one, as the yaml's format says.

    Anchor-free: the scale is the yaml's ``scale`` (ultralytics stores it), else the letter in
    ``name`` or in the yaml's ``yaml_file``; ultralytics' ``channels`` key is our ``ch``.
    """
    if not is_anchor_free(cfg):
        return build_model(cfg, name, nc=nc, source=source)
    cfg = dict(cfg)
    if "ch" not in cfg and "channels" in cfg:
        cfg["ch"] = cfg["channels"]
    scale = cfg.get("scale") or guess_scale(name) or guess_scale(Path(str(cfg.get("yaml_file") or "")).stem)
    with torch.random.fork_rng(devices=[]):  # weights from a fixed seed, as every build; the caller's RNG untouched
        torch.manual_seed(SEED)
        return AnchorFreeModel(cfg, name=name, scale=scale, nc=nc, source=source).eval()


def _checkpoint_nc(ckpt: Checkpoint) -> int:
    """The class count: from the yaml inside, else from the Detect convolutions' width."""
    if ckpt.yaml is not None and "nc" in ckpt.yaml:
        nc = ckpt.yaml["nc"]
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise UserError(f"{ckpt.path}: its yaml's 'nc' is not a class count: {str(nc)[:40]!r}")
        return nc
    if not ckpt.layers:
        raise UserError(f"{ckpt.path} holds no tensors of a model")
    head = ckpt.layers[max(ckpt.layers)]
    if "anchors" not in head and any(k.startswith("cv3.0.") for k in head):
        return _anchor_free_nc(ckpt, head)
    anchors, conv = head.get("anchors"), head.get("m.0.weight")
    if anchors is None or conv is None or anchors.dim() != 3 or conv.dim() != 4:
        raise UserError(f"{ckpt.path}: the last layer is neither a YOLOv5 Detect head (anchors, m.0.weight) "
                        "nor an anchor-free one (cv2, cv3)")
    nc = conv.shape[0] // max(anchors.shape[1], 1) - 5
    if nc < 1:
        raise UserError(f"{ckpt.path}: the Detect head's {conv.shape[0]} outputs leave no classes")
    return nc


def _anchor_free_nc(ckpt: Checkpoint, head: dict[str, torch.Tensor]) -> int:
    """The anchor-free head's class branch ends in a plain conv with one output per class."""
    convs = {int(m.group(1)): t for k, t in head.items() if (m := re.fullmatch(r"cv3\.0\.(\d+)\.weight", k))}
    last = convs[max(convs)] if convs else None
    if last is None or last.dim() != 4:
        raise UserError(f"{ckpt.path}: the anchor-free head's class branch (cv3.0) ends in no convolution")
    return int(last.shape[0])
