"""The sidecar ``FILE.json`` every ONNX we write carries (model, classes, imgsz, layers, ...).

Read by every later verb (calib, build, parity, per-block) and written by export and calib;
a neutral module beside ``files.py`` so that engines, below the exporter, can read it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def read_sidecar(onnx_path: str | Path) -> dict[str, Any] | None:
    """The sidecar ``FILE.json`` beside ``FILE.onnx``, or None when absent or unreadable."""
    side = Path(onnx_path).with_suffix(".json")
    try:
        doc = json.loads(side.read_text()) if side.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def export_sidecar(candidate: str | Path) -> dict[str, Any] | None:
    """The export sidecar describing a deployable: ``FILE.json`` beside an ONNX, or what an
    engine's ``FILE.engine.json`` carries under ``export`` (``build`` copies it there)."""
    path = Path(candidate)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        export = (engine_sidecar(path) or {}).get("export")
        return export if isinstance(export, dict) else None
    return read_sidecar(path)


def engine_sidecar(engine: str | Path) -> dict[str, Any] | None:
    """The sidecar ``FILE.engine.json`` that ``build`` writes beside an engine, or None."""
    path = Path(engine)
    side = path.with_name(path.name + ".json")
    try:
        doc = json.loads(side.read_text()) if side.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def model_source(model: str | None, cfg: str | Path | None, weights: str | Path | None,
                 blocks: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The sidecar's ``source``: the model as it was given (a zoo name, a yaml, weights) and the
    block files its own layers came from (``--blocks``), so that a later verb (``calib --qat``)
    can load it again, or say which block files it needs."""
    out: dict[str, Any] = {k: str(v) for k, v in (("model", model), ("cfg", cfg), ("weights", weights)) if v}
    if blocks:
        out["blocks"] = list(blocks)
    return out
