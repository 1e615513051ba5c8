"""An ultralytics ``best.pt`` with an attention block, as a user who patched ultralytics writes it,
carrying trained weights: the demo ``demo/yolo11n-ca-shapes.pt`` (our YOLO11n with Coordinate
Attention before SPPF, trained on the shapes data) moved into ultralytics' own ``DetectionModel``
built from a yaml whose row 9 is ``[-1, 1, CoordAtt, [256]]``, with the user's ``CoordAtt`` class
(the official ``coordatt.py``'s attributes) added to ``ultralytics.nn.modules.block`` and to
``tasks.py``'s names, as users add it, and saved by ultralytics' ``YOLO.save``. The pickle names
ultralytics' classes and ``ultralytics.nn.modules.block.CoordAtt``; our loader reads it as data.
As in a real one, ultralytics' ``initialize_weights`` gave every BatchNorm eps 1e-3, the
attention's ``bn1`` too (the demo's has 1e-5): its boxes differ from the demo's by about 0.1 px,
and ours read from the file equal ultralytics' own model run on it (``tests/test_docs.py``).

    python tests/ultralytics_best.py OUT.pt     # needs ultralytics (test-only; tests/run.sh installs it)

Test-only: the package never imports ultralytics.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from torch import nn

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolo11n-ca-shapes.pt"


class h_sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class h_swish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = h_sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    """The official Coordinate Attention (Hou et al. 2021), written as the users' patches copy it."""

    def __init__(self, inp: int, reduction: int = 32) -> None:
        super().__init__()
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, inp, 1)
        self.conv_w = nn.Conv2d(mip, inp, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        return x * self.conv_h(x_h).sigmoid() * self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()


def ultralytics_yaml(ours: dict) -> dict:
    """Our demo's yaml as the user's: ``CoordAtt`` with the channel count ultralytics passes as is."""
    doc = {k: v for k, v in ours.items() if k in ("nc", "scales", "backbone", "head")}
    doc["scale"] = "n"
    doc["backbone"] = [[f, n, "CoordAtt", [256]] if m == "ca" else [f, n, m, a] for f, n, m, a in doc["backbone"]]
    return doc


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python tests/ultralytics_best.py OUT.pt")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-settings-"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    from ultralytics import YOLO
    from ultralytics.nn import tasks
    from ultralytics.nn.modules import block

    from attn_deploy.models import load_model

    for cls in (h_sigmoid, h_swish, CoordAtt):  # the user's patch: the classes live in ultralytics' block.py
        cls.__module__ = "ultralytics.nn.modules.block"
        setattr(block, cls.__name__, cls)
    tasks.CoordAtt = CoordAtt
    ours = load_model(weights=DEMO)
    out = Path(args[0])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "yolo11n-ca.yaml"
        cfg.write_text(yaml.safe_dump(ultralytics_yaml(ours.yaml), sort_keys=False))
        model = YOLO(str(cfg), verbose=False)
    model.model.load_state_dict(ours.state_dict(), strict=True)
    model.model.names = dict(enumerate(ours.names))
    model.save(out)
    print(f"{out}: ultralytics {type(model.model).__name__} with CoordAtt, the demo's weights")


if __name__ == "__main__":
    main()
