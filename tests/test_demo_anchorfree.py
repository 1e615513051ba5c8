"""The trained anchor-free demo (yolo11n-ca on the shapes data): what its checkpoint claims,
and parity with per-block boundaries on it end to end (ONNX Runtime against PyTorch on
regenerated validation images), its attention blocks named as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attn_deploy.cli import main
from attn_deploy.models import load_model
from attn_deploy.models.checkpoint import safe_load
from attn_deploy.train.shapes import CLASSES, write_dataset

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolo11n-ca-shapes.pt"


def test_demo_checkpoint_is_small_safe_and_says_how_it_was_made() -> None:
    assert DEMO.stat().st_size < 8 * 2**20
    doc = safe_load(DEMO)
    assert doc["arch"] == "yolo11n-ca" and doc["recipe"]["imgsz"] == 320
    assert doc["val"]["map50"] >= 0.9
    assert all(t.dtype == torch.float16 for t in doc["state_dict"].values() if t.is_floating_point())
    net = load_model(weights=DEMO)
    assert list(net.names) == list(CLASSES) and net.rows[9].name == "ca" and net.rows[11].name == "C2PSA"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo11")
    data = write_dataset(root / "shapes", train=0, val=32)
    out = root / "demo11.onnx"
    r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "320", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    return out, data


def test_parity_and_per_block_on_the_anchor_free_demo(exported: tuple[Path, Path]) -> None:
    onnx_file, data = exported
    r = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(onnx_file), "--data", str(data),
                                  "--per-block", "--block-images", "2", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    det = doc["detections"]
    assert det["agreement"] >= 0.99 and det["matched"] > 100  # a real detector, no objectness
    assert doc["map50"]["reference"] > 0.85 and abs(doc["map_drop"]) < 0.05
    blocks = {b["layer"]: b for b in doc["blocks"]}
    assert len(blocks) == 25 and blocks[9]["attention"] and blocks[11]["attention"]
    assert max(b["local"]["rel"] for b in blocks.values() if b["local"]) < 1e-3  # float32 against float32
    side = json.loads(onnx_file.with_suffix(".json").read_text())
    assert side["family"] == "yolo11" and side["names"] == list(CLASSES)
