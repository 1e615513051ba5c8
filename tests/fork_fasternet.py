"""A FasterNet fork's ``best.pt`` as the field saves it: the stand-in fork (``tests/forks/yolov5``)
loads its ``C3_Faster`` from ``models/extra/fasternet.py`` by path, so the module is not
importable by name, and ``torch.save(..., pickle_module=dill)`` pickles its classes and the
bound ``forward`` each ``Partial_conv3`` sets on itself by value, with the module's globals:
its ``__spec__`` (``_frozen_importlib.ModuleSpec``), ``__loader__``
(``_frozen_importlib_external.SourceFileLoader``) and ``__builtins__`` (``builtins.__dict__``),
what a real fork's checkpoint carried.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yolov5_standin as y5

from attn_deploy.models.zoo import SCALES, YOLOV5

BLOCKS = Path(__file__).resolve().parent.parent / "examples" / "blocks" / "fasternet.py"
FASTER_ROWS = (2, 4, 13, 17)  # C3 rows of yolov5 v7.0 whose bottlenecks become FasterNet blocks


def cfg(nc: int = 4) -> dict[str, Any]:
    gd, gw = SCALES["n"]
    doc = {"nc": nc, "depth_multiple": gd, "width_multiple": gw, **copy.deepcopy({k: v for k, v in YOLOV5.items() if k != "nc"})}
    rows = doc["backbone"] + doc["head"]
    for i in FASTER_ROWS:
        assert rows[i][2] == "C3", rows[i]
        rows[i][2] = "C3_Faster"
    return doc


def model() -> torch.nn.Module:
    with y5.installed():
        return y5.randomize(y5.DetectionModel(cfg()))


def save(path: Path, net: torch.nn.Module) -> Path:
    """With dill, as ``fork_best.save`` saves a model whose blocks come from a plugin."""
    import fork_best

    return fork_best.save(path, net)
