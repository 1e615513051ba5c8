"""Per-block parity for the ``parity`` verb: open a candidate's block backend (ONNX Runtime or
TensorRT), then run it against PyTorch on the first images of the parity data.

The parity check itself knows nothing of blocks; the CLI runs it, then this, and attaches the
report to the parity result (its ``blocks`` slot), whose JSON then carries ``blocks`` and
``culprit`` beside the gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attn_deploy.diagnose.blocks import DEFAULT_TOLERANCE, BlockBackend, BlockReport, per_block
from attn_deploy.engines import Runner
from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import LayerBoundary
from attn_deploy.models.heads import Detector
from attn_deploy.parity.check import ParityOptions, first_batches

Blocks = tuple[BlockBackend, list[LayerBoundary]]


@dataclass(frozen=True)
class BlockOptions:
    images: int = 32  # the first images of the data (each runs every layer twice more)
    tolerance: float = DEFAULT_TOLERANCE  # relative local error that names a culprit


def open_blocks(path: str | Path, net: Detector) -> Blocks:
    """The backend for a candidate file and its layer boundaries, checked against ``net``."""
    from attn_deploy.engines import ENGINE_SUFFIXES
    from attn_deploy.exporter.layers import boundaries_for, model_rows
    from attn_deploy.onnxfile import read_onnx
    from attn_deploy.sidecar import read_sidecar

    path = Path(path)
    engine = path.suffix.lower() in ENGINE_SUFFIXES
    if engine:
        from attn_deploy.diagnose.trt_blocks import engine_onnx

        src = engine_onnx(path)[0]
    else:
        src = path
    try:
        bounds = boundaries_for(read_onnx(src), read_sidecar(src), model_rows(net))
    except ValueError as e:
        raise UserError(f"{src.name}: the layer boundaries cannot be found ({e})",
                        "per-block parity needs an ONNX exported by attn-deploy (node names /model.<i>/...)") from None
    if [b.module for b in bounds] != [r.module for r in model_rows(net)]:
        raise UserError(f"{src.name} has {len(bounds)} layers that do not match the reference model's {len(net.model)}",
                        "compare the model this file was exported from")
    if engine:
        from attn_deploy.diagnose.trt_blocks import TrtBlocks

        return TrtBlocks(path, bounds), bounds
    from attn_deploy.diagnose.onnx_blocks import OnnxBlocks

    return OnnxBlocks(path, bounds), bounds


def per_block_parity(reference: Detector, candidate: Runner, opts: ParityOptions, blocks: Blocks,
                     block_opts: BlockOptions = BlockOptions()) -> BlockReport:
    """Both errors per layer on the first ``block_opts.images`` images of the parity data,
    shaped as ``candidate`` takes them; closes the backend's sessions and engines."""
    backend, bounds = blocks
    count = min(opts.max_images or block_opts.images, block_opts.images)
    try:
        return per_block(reference, backend, bounds, first_batches(candidate, opts, count), block_opts.tolerance)
    finally:
        backend.close()
