"""Parity's gates know the precision (parity/gates.py): a correct INT8 graph within its budget
passes by default, broken ones fail (one activation's scale off by 10x, a wrong zero point), and
the float graph under an INT8 name fails whatever it scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from attn_deploy.cli import main
from attn_deploy.parity.gates import AGREEMENT, gates_for, precision_of

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"
TIED = "/model.6/cv3/act/Mul_output_0"  # a C3's output, read by a Conv and a Concat's scale group


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The demo exported (float32), its INT8 graph (mse ranges, the Detect's outputs in float), and data."""
    from attn_deploy.train.shapes import write_dataset

    root = tmp_path_factory.mktemp("gates")
    data = write_dataset(root / "shapes", train=16, val=24)
    src, q = root / "demo.onnx", root / "demo.int8.onnx"
    r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "320", "-o", str(src)])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--data", str(data), "--images", "16",
                                  "--method", "mse", "--exclude", r"^/model\.25/m\.", "-o", str(q)])
    assert r.exit_code in (0, 1), r.stderr
    return src, q, data


def parity(candidate: Path, data: Path, *extra: str) -> tuple[int, dict]:
    r = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(candidate), "--data", str(data),
                                  "--json", *extra])
    assert r.exit_code in (0, 1), r.stderr
    return r.exit_code, json.loads(r.stdout)


def edited(src: Path, out: Path, field: int, change) -> Path:
    """A copy of the Q/DQ graph with the scale (field 1) or zero point (2) of ``TIED``'s QuantizeLinear changed."""
    m = onnx.load(src)
    inits = {t.name: t for t in m.graph.initializer}
    (q,) = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == TIED]
    t = inits[q.input[field]]
    a = numpy_helper.to_array(t)
    t.CopyFrom(numpy_helper.from_array(change(a).astype(a.dtype), t.name))
    onnx.save(m, out)
    shutil.copyfile(src.with_suffix(".json"), out.with_suffix(".json"))
    return out


def test_defaults_by_what_the_file_carries(graphs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, q, _ = graphs
    assert precision_of(src) == ("fp32", None) and precision_of(q) == ("int8", "int8")
    g = gates_for(src)
    assert (g.min_agreement, g.iou, g.mismatch) == (*AGREEMENT["fp32"], None) == (0.95, 0.9, None)
    g = gates_for(q)
    assert (g.min_agreement, g.iou, g.mismatch) == (0.75, 0.5, None)
    g = gates_for(q, min_agreement=0.9, iou=0.7, max_map_drop=2)
    assert (g.min_agreement, g.iou, g.max_map_drop) == (0.9, 0.7, 2)  # the user's figures win
    fake = tmp_path / "model.int8.onnx"
    shutil.copyfile(src, fake)
    assert "holds no Q/DQ node" in gates_for(fake).mismatch


def test_a_correct_int8_graph_passes_by_default(graphs: tuple[Path, Path, Path]) -> None:
    _, q, data = graphs
    code, doc = parity(q, data)
    assert doc["gates"] == {"min_agreement": 0.75, "max_map_drop": 0.5, "iou": 0.5}
    assert doc["detections"]["iou_thres"] == 0.5 and doc["detections"]["agreement"] > 0.9  # 0.97 on 300 images
    assert code == 0 and doc["passed"], doc["failures"]
    code, strict = parity(q, data, "--agreement-iou", "0.9", "--min-agreement", "0.95")  # the FP32 gate refuses it
    assert strict["detections"]["agreement"] < doc["detections"]["agreement"]


@pytest.mark.parametrize(("what", "field", "change"), [
    ("scale x10", 1, lambda a: a * 10),
    ("scale /10", 1, lambda a: a / 10),
    ("zero point +20", 2, lambda a: a.astype(np.int32) + 20),
])
def test_a_broken_int8_graph_fails_by_default(graphs: tuple[Path, Path, Path], tmp_path: Path, what: str, field: int,
                                              change) -> None:
    _, q, data = graphs
    code, doc = parity(edited(q, tmp_path / "broken.int8.onnx", field, change), data)
    assert code == 1 and not doc["passed"], what
    assert doc["detections"]["agreement"] < 0.75  # measured on 300 images: 0.32, 0.09, 0.54
    assert doc["map_drop"] > 5  # and it loses more than 15 points of mAP50-95


def test_the_float_graph_under_an_int8_name_fails(graphs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, _, data = graphs
    fake = tmp_path / "demo.int8.onnx"
    shutil.copyfile(src, fake)
    code, doc = parity(fake, data)
    assert code == 1 and doc["detections"]["agreement"] == 1.0  # it computes what PyTorch does, and still fails
    assert any("holds no Q/DQ node" in f for f in doc["failures"])


@pytest.mark.parametrize(("built", "onnx_precision", "gated_as"), [
    ("int8", "fp32", "int8"),  # implicit INT8 from a calibration cache (TensorRT 8.x-10.x)
    ("best", "fp32", "int8"),
    ("fp32", "int8", "int8"),  # a Q/DQ graph built strongly typed
    ("fp16", "fp32", "fp16"),
    ("fp32", "fp32", "fp32"),
])
def test_an_engine_is_gated_by_what_it_was_built_as(tmp_path: Path, built: str, onnx_precision: str,
                                                     gated_as: str) -> None:
    engine = tmp_path / "m.engine"
    (tmp_path / "m.engine.json").write_text(json.dumps({"precision": built, "onnx_precision": onnx_precision}))
    assert precision_of(engine) == (gated_as, None)
    g = gates_for(engine)
    assert (g.min_agreement, g.iou) == AGREEMENT[gated_as]
