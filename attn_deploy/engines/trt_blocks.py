"""Per-block parity for a TensorRT engine.

An engine keeps no names for most of its tensors, so the boundaries are read from a debug
engine built from the same ONNX with the same builder settings, with only the layer
boundaries marked as outputs (Polygraphy's ``ModifyNetworkOutputs``). Marking every tensor
(``--onnx-outputs mark all``) would stop TensorRT fusing across layers and so change the
numbers under study; marking the ~25 boundaries keeps fusion inside each layer. Each layer
alone is its ONNX subgraph (``onnx.utils.Extractor``) built the same way: a handful of small
builds, minutes on a GPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx

from attn_deploy.engines.build import BuildOptions, Plan, _build
from attn_deploy.engines.trt import TrtRunner, engine_sidecar, require_tensorrt
from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import LayerBoundary
from attn_deploy.files import sha256
from attn_deploy.parity.blocks import RunnerBlocks


def engine_onnx(engine: Path) -> tuple[Path, dict[str, Any]]:
    """The ONNX an engine was built from (beside it, same sha256) and the engine's sidecar."""
    side = engine_sidecar(engine)
    if not side or "onnx" not in side:
        raise UserError(f"{engine} has no sidecar naming its ONNX: --per-block rebuilds from it",
                        "build it with 'attn-deploy build', or compare the ONNX itself")
    src = engine.parent / side["onnx"]["file"]
    if not src.is_file() or sha256(src.read_bytes()) != side["onnx"]["sha256"]:
        raise UserError(f"{engine} was built from {side['onnx']['file']}, which is not beside it unchanged",
                        "put that ONNX beside the engine")
    return src, side


class TrtBlocks(RunnerBlocks):
    """``BlockBackend`` for an engine: a debug engine for the boundaries, one per layer."""

    def __init__(self, engine: str | Path, boundaries: list[LayerBoundary]) -> None:
        super().__init__()
        require_tensorrt()
        self.engine = Path(engine)
        src, side = engine_onnx(self.engine)
        plan = Plan(**side.get("plan", {}))
        prof = (side.get("profiles") or [None])[0]
        profile = (prof["input"], (tuple(prof["min"]), tuple(prof["opt"]), tuple(prof["max"]))) if prof else None
        model = onnx.load(str(src))
        marks = [o.name for o in model.graph.output] + [b.output for b in boundaries]
        self.whole = TrtRunner(self.engine, _build(src, plan, profile, BuildOptions(), list(dict.fromkeys(marks))))
        extractor = onnx.utils.Extractor(model)
        with tempfile.TemporaryDirectory(prefix="attn-deploy-blocks-") as tmp:
            for b in boundaries:
                try:
                    part = Path(tmp) / f"layer{b.index}.onnx"
                    onnx.save(extractor.extract_model(list(dict.fromkeys(b.inputs)), [b.output]), str(part))
                    self.parts[b.index] = TrtRunner(self.engine, _build(part, plan, None, BuildOptions()))
                except (UserError, ValueError, onnx.checker.ValidationError) as e:
                    self.failed[b.index] = f"could not be built alone: {e}"
