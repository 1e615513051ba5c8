"""One entry point for every way a user names a model: zoo name, yaml file, checkpoint."""

from __future__ import annotations

from pathlib import Path

from attn_deploy.errors import UserError
from attn_deploy.models.checkpoint import Checkpoint, read_checkpoint
from attn_deploy.models.mapping import load_checkpoint_weights
from attn_deploy.models.yolo import DetectionModel, build_model, load_yaml
from attn_deploy.models.zoo import create_model


def load_model(
    model: str | None = None, cfg: str | Path | None = None, weights: str | Path | None = None,
    nc: int | None = None,
) -> DetectionModel:
    """A model in eval mode from ``--model``, ``--cfg`` and/or ``--weights``.

    A training checkpoint carries its own yaml, so it needs neither name nor yaml; a plain
    state dict needs one of them. When both a name (or yaml) and a checkpoint are given, the
    named architecture is built and the checkpoint's tensors must fit it, layer by layer.
    """
    if model and cfg:
        raise UserError("give --model or --cfg, not both")
    ckpt = read_checkpoint(weights) if weights else None
    if ckpt is not None:
        nc = _checkpoint_nc(ckpt) if nc is None else nc
    if model:
        net = create_model(model, nc=nc)
    elif cfg:
        net = build_model(load_yaml(cfg), Path(cfg).stem, nc=nc, source=str(cfg))
    elif ckpt is not None and ckpt.yaml is not None:
        net = build_model(ckpt.yaml, ckpt.path.stem, nc=nc, source=f"{ckpt.path} (its yaml)")
    elif ckpt is not None:
        raise UserError(f"{ckpt.path} is a plain state dict: name its architecture with --model or --cfg")
    else:
        raise UserError("no model given: use --model NAME, --cfg YAML or --weights FILE")
    if ckpt is not None:
        load_checkpoint_weights(net, ckpt)
    return net.eval()


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
    anchors, conv = head.get("anchors"), head.get("m.0.weight")
    if anchors is None or conv is None or anchors.dim() != 3 or conv.dim() != 4:
        raise UserError(f"{ckpt.path}: the last layer is not a YOLOv5 Detect head (no anchors, m.0.weight)")
    nc = conv.shape[0] // max(anchors.shape[1], 1) - 5
    if nc < 1:
        raise UserError(f"{ckpt.path}: the Detect head's {conv.shape[0]} outputs leave no classes")
    return nc
