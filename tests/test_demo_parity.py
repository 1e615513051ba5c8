"""The trained demo model: what its checkpoint claims, and the parity gate on it end to end
(ONNX Runtime against PyTorch on regenerated validation images; a damaged ONNX fails)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from attn_deploy.cli import main
from attn_deploy.models.checkpoint import read_checkpoint, safe_load
from attn_deploy.train.shapes import CLASSES, ShapesSpec, make_image, write_dataset

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"


def test_demo_checkpoint_is_small_safe_and_says_how_it_was_made() -> None:
    assert DEMO.stat().st_size < 5 * 2**20
    doc = safe_load(DEMO)
    assert doc["arch"] == "yolov5n-ca" and doc["recipe"]["imgsz"] == 320
    assert doc["val"]["map50"] >= 0.85 and doc["trained"]["minutes"] < 30
    assert all(t.dtype == torch.float16 for t in doc["state_dict"].values() if t.is_floating_point())
    assert read_checkpoint(DEMO).names == list(CLASSES)


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 48 images of the validation split, made again (train=0 leaves them as they are)."""
    return write_dataset(tmp_path_factory.mktemp("shapes"), train=0, val=48)


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "demo.onnx"
    r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "320", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    return out


def parity(onnx_file: Path, data: Path) -> tuple[int, dict]:
    r = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(onnx_file),
                                  "--data", str(data), "--json"])
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else {"stderr": r.stderr})


def test_parity_of_the_demo_against_its_own_onnx(demo_onnx: Path, shapes_val: Path) -> None:
    code, doc = parity(demo_onnx, shapes_val)
    assert code == 0, doc
    det = doc["detections"]
    assert det["agreement"] >= 0.99 and det["matched"] > 150
    ref, cand = doc["map50_95"]["reference"], doc["map50_95"]["candidate"]
    assert round(ref, 3) == round(cand, 3) and doc["map50"]["reference"] > 0.85  # a real detector
    assert doc["tensor"]["output0.boxes"]["passed"] and doc["tensor"]["output0.scores"]["passed"]


def test_a_damaged_onnx_fails_the_gate(demo_onnx: Path, shapes_val: Path, tmp_path: Path) -> None:
    model = onnx.load(demo_onnx)
    init = next(t for t in model.graph.initializer if re.fullmatch(r"model\.\d+\.m\.0\.weight", t.name))
    w = numpy_helper.to_array(init).copy()
    w[15] += 0.5  # one output channel of the P3 head: anchor 1's objectness (5 + nc = 10 per anchor)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, damaged)
    code, doc = parity(damaged, shapes_val)
    assert code == 1 and not doc["passed"]
    assert doc["detections"]["agreement"] < 0.95 and np.isfinite(doc["map_drop"])


def test_bad_inputs_are_one_line(demo_onnx: Path, tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(tmp_path / "no.onnx")])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "file not found" in missing.stderr
    wrong = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(demo_onnx), "--imgsz", "640"])
    assert wrong.exit_code == 2 and "fixed at 320,320" in wrong.stderr


def test_unreadable_images_are_named_and_skipped_or_refused(demo_onnx: Path, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "good.jpg"), make_image(ShapesSpec(), "val", 0)[0])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    args = ["parity", "--weights", str(DEMO), "--against", str(demo_onnx), "--data", str(tmp_path), "--json"]
    skipped = CliRunner().invoke(main, args)
    assert skipped.exit_code == 0 and "skipped" in skipped.stderr and "broken.jpg" in skipped.stderr
    doc = json.loads(skipped.stdout)
    assert doc["images"] == 1 and doc["detections"]["matched"] > 0 and "map50" not in doc
    refused = CliRunner().invoke(main, [*args, "--on-error", "fail"])
    assert refused.exit_code == 2 and "broken.jpg: not a decodable image" in refused.stderr
