"""``verify --fork DIR``: our rebuild of a checkpoint against the user's own fork, run on it.

The checkpoint reader never runs a pickle, so it rebuilds a fork's model from names, shapes
and classes, and some choices are readings (``models/mapping.py``). Only the fork's code can
prove them. When the user asks, and only then, ``fork_runner.py`` loads the checkpoint with
the fork's own code in a separate process and saves each yaml layer's output on the same
images; here every layer whose output has the same shape on both sides is compared (relative
to its scale, as ``blocks.py`` judges layers), and the model's output as boxes (pixels) and
scores apart. The first layer past the tolerance is named: an error there travels to every
later layer, so the first is the culprit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attn_deploy import layouts
from attn_deploy.diagnose.blocks import ErrorStats
from attn_deploy.errors import UserError, one_line
from attn_deploy.models.heads import Detector, head_of

RUNNER = Path(__file__).with_name("fork_runner.py")
LAYER_TOL = 1e-3  # relative; the same float32 model differs near 1e-6
BOX_TOL = 1e-2  # pixels
SCORE_TOL = 1e-4  # probabilities
TIMEOUT = 900  # seconds for the fork's process


@dataclass
class LayerCheck:
    """One yaml layer on both sides: our module, the fork's class, and their difference."""

    layer: int
    module: str
    fork_class: str
    shape: list[int] | None  # None: not compared (shapes differ, or the fork's output is no tensor)
    stats: ErrorStats | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "module": self.module, "fork_class": self.fork_class, "shape": self.shape,
                **({"error": self.stats.to_dict()} if self.stats is not None else {"compared": False})}


@dataclass
class VerifyResult:
    """Truthy when every compared layer and the output agree within the tolerances."""

    weights: str
    fork: str
    images: int
    imgsz: tuple[int, int]
    layers: list[LayerCheck] = field(default_factory=list)
    boxes: ErrorStats = field(default_factory=ErrorStats)
    scores: ErrorStats = field(default_factory=ErrorStats)
    readings: list[dict[str, Any]] = field(default_factory=list)
    layer_tol: float = LAYER_TOL
    box_tol: float = BOX_TOL
    score_tol: float = SCORE_TOL

    @property
    def compared(self) -> int:
        """Layers whose outputs were compared (the same shape on both sides)."""
        return sum(c.stats is not None for c in self.layers)

    @property
    def first_difference(self) -> LayerCheck | None:
        return next((c for c in self.layers if c.stats is not None and c.stats.rel > self.layer_tol), None)

    def failures(self) -> list[str]:
        out = []
        if (first := self.first_difference) is not None:
            out.append(f"layer {first.layer} ({first.module}, the fork's {first.fork_class}) is the first that "
                       f"differs: relative error {first.stats.rel:.3g} > {self.layer_tol:g}")
        if self.boxes.max_abs > self.box_tol or self.boxes.nonfinite:
            out.append(f"boxes differ by {self.boxes.max_abs:.3g} px > {self.box_tol:g}")
        if self.scores.max_abs > self.score_tol or self.scores.nonfinite:
            out.append(f"scores differ by {self.scores.max_abs:.3g} > {self.score_tol:g}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        first = self.first_difference
        return {
            "passed": self.passed, "failures": self.failures(), "weights": self.weights, "fork": self.fork,
            "images": self.images, "imgsz": list(self.imgsz),
            "tolerances": {"layer_rel": self.layer_tol, "boxes_px": self.box_tol, "scores": self.score_tol},
            "boxes": self.boxes.to_dict(), "scores": self.scores.to_dict(),
            "first_difference": first.layer if first is not None else None,
            "compared": self.compared, "layers": [c.to_dict() for c in self.layers],
            "readings": self.readings,
        }


def verify_fork(net: Detector, weights: str | Path, fork: str | Path, images: np.ndarray,
                python: str | None = None) -> VerifyResult:
    """Run ``weights`` through the fork's code in ``fork`` and ``net`` (our rebuild of the same
    checkpoint) on ``images`` (N, 3, H, W float32 in [0, 1]), layer by layer."""
    folder = Path(fork)
    if not folder.is_dir():
        raise UserError(f"--fork {fork}: not a folder (give the fork's repository, the folder holding models/)")
    theirs, classes = run_fork(folder, Path(weights), images, python)
    ours = _our_layers(net, images)
    result = VerifyResult(str(weights), str(folder), len(images), (images.shape[2], images.shape[3]),
                          readings=list(getattr(net, "readings", [])))
    for i, layer in enumerate(net.model):
        result.layers.append(_compare_layer(i, layer, classes[i] if i < len(classes) else "?",
                                            ours.get(i), theirs.get(f"layer{i}")))
    _compare_output(result, net, ours["final"], theirs["final"])
    return result


def verify_images(data: str | Path | None, imgsz: tuple[int, int], count: int) -> np.ndarray:
    """The first ``count`` images of ``data`` letterboxed as parity feeds them (random ones without data)."""
    from attn_deploy.parity.check import ParityOptions, image_batches

    batches = image_batches(ParityOptions(data, max_images=count), imgsz, count)[0]
    return np.concatenate([b.images for b in batches])[:count]


def run_fork(folder: Path, weights: Path, images: np.ndarray, python: str | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """The fork's layer outputs and layer classes, from ``fork_runner.py`` in its own process."""
    with tempfile.TemporaryDirectory(prefix="attn-deploy-fork-") as tmp:
        feed, out = Path(tmp) / "images.npy", Path(tmp) / "out.npz"
        np.save(feed, np.ascontiguousarray(images, np.float32))
        cmd = [python or sys.executable, str(RUNNER), str(folder.resolve()), str(weights.resolve()), str(feed), str(out)]
        try:
            done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=TIMEOUT,
                                  env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        except FileNotFoundError as e:
            raise UserError(f"--python {python}: cannot run it ({e.strerror})") from e
        except subprocess.TimeoutExpired as e:
            raise UserError(f"the fork's code in {folder} ran over {TIMEOUT} s on {weights.name}") from e
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise UserError(f"the fork's code in {folder} could not run {weights.name}: {one_line(last, 120)}",
                            "run it with the fork's requirements installed (--python names its interpreter)",
                            detail=done.stderr)
        with np.load(out, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        classes = json.loads(Path(f"{out}.json").read_text())["classes"]
    return arrays, [str(c) for c in classes]


def _our_layers(net: Detector, images: np.ndarray) -> dict[Any, np.ndarray]:
    seen: dict[Any, np.ndarray] = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o.numpy()) if isinstance(o, torch.Tensor)
                                         else None) for i, layer in enumerate(net.model)]
    try:
        with torch.inference_mode():
            seen["final"] = net(torch.from_numpy(np.ascontiguousarray(images, np.float32))).numpy()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _compare_layer(i: int, layer: torch.nn.Module, fork_class: str, ours: np.ndarray | None,
                   theirs: np.ndarray | None) -> LayerCheck:
    module = type(layer).__name__
    if ours is None or theirs is None or ours.shape != theirs.shape:
        return LayerCheck(i, module, fork_class, None)
    stats = ErrorStats()
    stats.add(theirs, ours)
    return LayerCheck(i, module, fork_class, list(ours.shape), stats)


def _compare_output(result: VerifyResult, net: Detector, ours: np.ndarray, theirs: np.ndarray) -> None:
    if ours.shape != theirs.shape:
        raise UserError(f"the fork's model outputs {list(theirs.shape)}, our rebuild {list(ours.shape)}",
                        "is this the fork the checkpoint was trained with?")
    layout = head_of(net).layout
    mine, fork = layouts.as_rows(ours, layout), layouts.as_rows(theirs, layout)
    result.boxes.add(fork[..., :4], mine[..., :4])
    result.scores.add(fork[..., 4:], mine[..., 4:])
