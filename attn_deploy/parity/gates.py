"""The parity gates a candidate is held to, by the precision it carries.

Detection agreement at IoU 0.9 (the same objects, boxed the same way) is what FP32 and FP16
graphs meet: their boxes move by hundredths of a pixel. An INT8 graph moves boxes by a pixel
or two, which at IoU 0.9 reads as a different box: correct INT8 graphs within their mAP budget
agree at 0.53-0.76 at IoU 0.9 on the official YOLOv5n (COCO128) and 0.84-0.97 on the demos, so
that floor stopped every INT8 ``ship``. At IoU 0.5 (the same objects found) the same graphs
agree at 0.83-0.86 (YOLOv5n, everything in INT8 with max ranges and the mse graph with its
Detect outputs in float) and 0.97 (demo), while broken ones fall to 0.29 or less (YOLOv5n: one
layer's activation scale x2, x10 or /10, a zero point off by 20) and 0.70 or less (demo): the
INT8 floor is 0.75 at IoU 0.5, with the mAP budget beside it whenever labels are given (those
broken graphs lose 15-66 points). A fine-tuned (QAT) graph is a new model as much as a
quantized one: it is held to the same labels and the same loose agreement.

A file that says it is INT8 (its sidecar, or ``.int8.`` in its name) but holds no Q/DQ node
fails whatever it scores: it is the float graph under an INT8 name.
"""

from __future__ import annotations

from pathlib import Path

from attn_deploy.parity.check import Gates
from attn_deploy.sidecar import ENGINE_SUFFIXES, engine_sidecar, read_sidecar

AGREEMENT = {"fp32": (0.95, 0.9), "fp16": (0.95, 0.9), "int8": (0.75, 0.5)}  # precision -> (floor, IoU)


def gates_for(candidate: str | Path, min_agreement: float | None = None, iou: float | None = None,
              max_map_drop: float = 0.5) -> Gates:
    """The gates for ``candidate``: the user's figures where given, else its precision's."""
    carried, claimed = precision_of(candidate)
    floor, overlap = AGREEMENT.get(carried, AGREEMENT["fp32"])
    mismatch = None
    if claimed == "int8" and carried != "int8":
        mismatch = f"{Path(candidate).name} says it is INT8 but holds no Q/DQ node: a {carried} graph under an INT8 name"
    return Gates(floor if min_agreement is None else min_agreement, max_map_drop, overlap if iou is None else iou,
                 mismatch)


def precision_of(candidate: str | Path) -> tuple[str, str | None]:
    """(the precision the file carries, the one its sidecar or name claims, or None)."""
    path = Path(candidate)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        side = engine_sidecar(path) or {}  # built from a Q/DQ graph, or in implicit INT8 (a cache; --precision best)
        said = {side.get("onnx_precision"), side.get("precision")}
        return ("int8" if said & {"int8", "best"} else "fp16" if "fp16" in said else "fp32"), None
    carried = _onnx_precision(path)
    side = read_sidecar(path) or {}
    claim = (side.get("precision") or {}).get("precision") if isinstance(side.get("precision"), dict) else None
    if claim is None and ".int8." in path.name.lower():
        claim = "int8"
    return carried, claim


def _onnx_precision(path: Path) -> str:
    import onnx

    from attn_deploy.engines.build import onnx_precision

    try:
        return onnx_precision(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 - unreadable here: the runner says why, in one line, when it loads it
        return "fp32"
