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

from attn_deploy.diagnose.blocks import RunnerBlocks
from attn_deploy.engines.build import BuildOptions, Plan, _build
from attn_deploy.engines.trt import TrtRunner, engine_sidecar, require_tensorrt
from attn_deploy.errors import UserError
from attn_deploy.exporter.layers import LayerBoundary
from attn_deploy.files import sha256


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


def rebuild_options(engine: Path, side: dict[str, Any]) -> BuildOptions:
    """The builder options the engine was built with, as far as they change its numbers: the
    DLA core and the implicit-INT8 calibration cache (which must still be there, unchanged)."""
    dla = side.get("dla") or {}
    cache = side.get("calib_cache")
    path = None
    if cache:
        path = Path(cache["path"])
        if not path.is_file() or sha256(path.read_bytes()) != cache["sha256"]:
            raise UserError(f"{engine} was built in implicit INT8 from {path}, which is gone or changed",
                            "per-block rebuilds the engine from its ONNX and that cache: put it back")
    return BuildOptions(dla_core=dla.get("core"), gpu_fallback=bool(dla.get("gpu_fallback")), calib_cache=path)


def fixed_input(model: onnx.ModelProto, name: str, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A copy of ``model`` whose input ``name`` is fixed at ``shape``, shapes inferred again, so
    that every layer cut out of it has static inputs (a layer engine gets no profile)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    (inp,) = [i for i in out.graph.input if i.name == name]
    for dim, value in zip(inp.type.tensor_type.shape.dim, shape):
        dim.Clear()
        dim.dim_value = int(value)
    return onnx.shape_inference.infer_shapes(out)


class TrtBlocks(RunnerBlocks):
    """``BlockBackend`` for an engine: a debug engine for the boundaries, one per layer."""

    def __init__(self, engine: str | Path, boundaries: list[LayerBoundary]) -> None:
        super().__init__()
        require_tensorrt()
        self.engine = Path(engine)
        src, side = engine_onnx(self.engine)
        plan, opts = Plan(**side.get("plan", {})), rebuild_options(self.engine, side)
        prof = (side.get("profiles") or [None])[0]
        profile = (prof["input"], (tuple(prof["min"]), tuple(prof["opt"]), tuple(prof["max"]))) if prof else None
        model = onnx.load(str(src))
        marks = [o.name for o in model.graph.output] + [b.output for b in boundaries]
        self.whole = TrtRunner(self.engine, _build(src, plan, profile, opts, list(dict.fromkeys(marks))))
        # parts of a dynamic engine are cut from the graph fixed at the profile's opt shape
        extractor = onnx.utils.Extractor(fixed_input(model, profile[0], profile[1][1]) if profile else model)
        with tempfile.TemporaryDirectory(prefix="attn-deploy-blocks-") as tmp:
            for b in boundaries:
                try:
                    part = Path(tmp) / f"layer{b.index}.onnx"
                    onnx.save(extractor.extract_model(list(dict.fromkeys(b.inputs)), [b.output]), str(part))
                    self.parts[b.index] = TrtRunner(self.engine, _build(part, plan, None, opts))
                except (UserError, ValueError, onnx.checker.ValidationError) as e:
                    self.failed[b.index] = f"could not be built alone: {e}"
