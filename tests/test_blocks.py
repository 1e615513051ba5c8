"""Layer boundaries in every ONNX we write, and per-block parity (accumulated vs local error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import pytest
import torch
from click.testing import CliRunner

from attn_deploy.calib.fp16 import convert_fp16
from attn_deploy.cli import main
from attn_deploy.diagnose.blocks import BlockReport, BlockRow, ErrorStats, per_block
from attn_deploy.diagnose.onnx_blocks import OnnxBlocks
from attn_deploy.engines.trt import tensorrt_version
from attn_deploy.exporter.export import export_model
from attn_deploy.exporter.layers import TRANSPARENT, LayerBoundary, find_boundaries, model_rows, scope_of
from attn_deploy.exporter.torch2onnx import ExportSpec
from attn_deploy.files import sha256
from attn_deploy.models import load_model
from attn_deploy.models.attention import list_attention
from attn_deploy.models.zoo import create_model
from attn_deploy.sidecar import read_sidecar

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"


def _check_boundary_tensors(model: onnx.ModelProto, bounds: list[LayerBoundary]) -> None:
    """Each output is made by a node of the layer's own scope (never a Q/DQ or Cast), or is the graph output."""
    producer = {t: n for n in model.graph.node for t in n.output}
    outputs = [o.name for o in model.graph.output]
    for b in bounds:
        node = producer.get(b.output)
        assert b.output in outputs or (scope_of(node) == b.index and node.op_type not in TRANSPARENT), (b, node)


@pytest.mark.parametrize("key", list_attention())
def test_boundaries_are_recorded_and_survive_fp16_and_onnxslim(key: str, tmp_path: Path) -> None:
    net = create_model(f"yolov5n-{key}", nc=3)
    path = tmp_path / "m.onnx"
    export_model(net, path, ExportSpec((64, 64)), check=False)
    shipped = onnx.load(path)
    assert [o.name for o in shipped.graph.output] == ["output0"]  # no extra outputs in the shipped graph
    recorded = [LayerBoundary.from_dict(d) for d in read_sidecar(path)["layers"]]
    rows = model_rows(net)
    assert [b.module for b in recorded] == [type(m).__name__ for m in net.model] and recorded[-1].output == "output0"
    assert recorded[0].inputs == ("images",) and recorded[-1].inputs == tuple(recorded[i].output for i in (18, 21, 24))
    attention = [b for b in recorded if b.attention]
    assert [b.index for b in attention] == [9] and attention[0].inputs == (recorded[8].output,)
    _check_boundary_tensors(shipped, recorded)
    fp16 = onnx.load_from_string(convert_fp16(path, None))
    slim = onnxslim.slim(onnx.load(path))
    for other in (fp16, slim):
        assert find_boundaries(other, rows) == recorded
        _check_boundary_tensors(other, recorded)


def test_error_stats_equal_numpy_on_the_whole() -> None:
    rng = np.random.default_rng(1)
    refs = [rng.normal(size=(2, 8, 5, 5)).astype(np.float32) for _ in range(3)]
    cands = [r + rng.normal(scale=0.01, size=r.shape).astype(np.float32) for r in refs]
    stats = ErrorStats()
    for r, c in zip(refs, cands):
        stats.add(r, c)
    r, c = np.concatenate([x.ravel() for x in refs]).astype(np.float64), np.concatenate([x.ravel() for x in cands]).astype(np.float64)
    assert stats.max_abs == pytest.approx(np.abs(r - c).max())
    assert stats.rel == pytest.approx(np.abs(r - c).max() / np.abs(r).max())
    assert stats.cosine == pytest.approx(r @ c / np.linalg.norm(r) / np.linalg.norm(c), rel=1e-12)
    nan = ErrorStats()
    nan.add(np.ones(3), np.array([1.0, np.nan, 1.0]))
    assert nan.rel == float("inf") and nan.to_dict()["nonfinite"] == 1


def test_culprit_needs_a_local_error_over_the_tolerance() -> None:
    def row(i: int, rel: float) -> BlockRow:
        r = BlockRow(LayerBoundary(i, "Conv", False, (i - 1,), f"t{i}", ("x",)))
        r.local.add(np.array([1.0]), np.array([1.0 + rel]))
        return r

    assert BlockReport([row(0, 1e-3), row(1, 5e-2), row(2, 2e-2)], tolerance=1e-2).culprit == 1
    assert BlockReport([row(0, 1e-3), row(1, 5e-3)], tolerance=1e-2).culprit is None


def _damaged(tmp_path: Path, key: str, index: tuple[int, ...]) -> Path:
    """The demo's weights with one element of ``key`` changed, as a plain state dict, exported."""
    net = load_model(None, None, str(DEMO))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    w = state[key]
    w[index] += 8 * w.abs().max()
    torch.save(state, tmp_path / "damaged.pt")
    out = tmp_path / "damaged.onnx"
    r = CliRunner().invoke(main, ["export", "--model", "yolov5n-ca", "--weights", str(tmp_path / "damaged.pt"),
                                  "--imgsz", "320", "-o", str(out), "--no-check"])
    assert r.exit_code == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attn_deploy.train.shapes import write_dataset

    return write_dataset(tmp_path_factory.mktemp("blocks") / "shapes", train=1, val=6)


@pytest.mark.slow
@pytest.mark.parametrize(("key", "layer"), [("model.9.conv_h.weight", 9), ("model.18.cv3.conv.weight", 18)])
def test_per_block_names_the_damaged_layer(key: str, layer: int, shapes: Path, tmp_path: Path) -> None:
    onnx_path = _damaged(tmp_path, key, (3, 0, 0, 0))
    before = sha256(onnx_path.read_bytes())
    r = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(onnx_path), "--data", str(shapes),
                                  "--block-images", "6", "--per-block", "--json"])
    assert r.exit_code in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert sha256(onnx_path.read_bytes()) == before  # the candidate file is never changed
    assert doc["culprit"] == layer
    blocks = {b["layer"]: b for b in doc["blocks"]}
    assert list(blocks) == list(range(26)) and blocks[9]["module"] == "CoordinateAttention"
    assert set(blocks[layer]["local"]) >= {"max_abs", "rel", "cosine"} and blocks[layer]["tensor"]
    worst_other = max(b["local"]["rel"] for i, b in blocks.items() if i != layer)
    assert blocks[layer]["local"]["rel"] >= 100 * worst_other
    # what comes after inherits the damage: accumulated, not local
    after = [b for i, b in blocks.items() if i > layer and b["module"] in ("Conv", "C3")]
    assert after and all(b["accumulated"]["rel"] > 100 * b["local"]["rel"] for b in after)
    assert all(b["accumulated"]["rel"] < 1e-4 for i, b in blocks.items() if i < layer)


def test_per_block_runs_an_fp16_graph_within_fp16_error(tmp_path: Path) -> None:
    net = load_model(None, None, str(DEMO))
    path = tmp_path / "m.onnx"
    export_model(net, path, ExportSpec((128, 128)), check=False)
    half = tmp_path / "m.fp16.onnx"
    half.write_bytes(convert_fp16(path, None))
    bounds = [LayerBoundary.from_dict(d) for d in read_sidecar(path)["layers"]]
    images = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    report = per_block(net, OnnxBlocks(half, bounds), bounds, [(images, 1)])
    rels = [r.local.rel for r in report.rows]
    assert report.images == 1 and all(0 <= x < 1e-2 for x in rels) and max(rels) > 1e-5  # float16, not float32
    assert report.culprit is None


def _fake_engine(tmp_path: Path, onnx_path: Path, digest: str) -> Path:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    side = {"tensorrt": "10.15.0", "plan": {"strongly_typed": False, "fp16": True, "int8": False, "note": ""},
            "profiles": [], "onnx": {"file": onnx_path.name, "sha256": digest}}
    engine.with_name("m.engine.json").write_text(json.dumps(side))
    return engine


def test_per_block_of_an_engine_finds_its_onnx_or_says_why(tmp_path: Path) -> None:
    from attn_deploy.diagnose.trt_blocks import engine_onnx
    from attn_deploy.errors import UserError

    path = tmp_path / "m.onnx"
    export_model(create_model("yolov5n-ca", nc=3), path, ExportSpec((64, 64)), check=False)
    assert engine_onnx(_fake_engine(tmp_path, path, sha256(path.read_bytes())))[0] == path
    with pytest.raises(UserError, match="not beside it unchanged"):
        engine_onnx(_fake_engine(tmp_path, path, "0" * 64))


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_per_block_of_an_engine_without_tensorrt_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    net = create_model("yolov5n-ca", nc=3)
    export_model(net, path, ExportSpec((64, 64)), check=False)
    engine = _fake_engine(tmp_path, path, sha256(path.read_bytes()))
    r = CliRunner().invoke(main, ["parity", "--model", "yolov5n-ca", "--against", str(engine), "--per-block"])
    assert r.exit_code == 2 and r.stderr.startswith("attn-deploy: error: TensorRT is not installed") and r.stderr.count("\n") == 1


@pytest.mark.needs_trt
@pytest.mark.needs_cuda
@pytest.mark.parametrize(("precision", "bound"), [("fp32", 1e-4), ("fp16", 1e-2)])
def test_per_block_of_engines_marks_only_the_boundaries(precision: str, bound: float, shapes: Path, tmp_path: Path) -> None:
    """A debug engine with the layer outputs marked: FP32 and FP16 stay within their error, and
    the damaged attention block is named in an engine as in ONNX Runtime. FP16 is the FP16
    ONNX built strongly typed (TensorRT 10+; 11 has no FP16 builder flag for a float32 ONNX)."""
    clean, damaged = tmp_path / "clean.onnx", _damaged(tmp_path, "model.9.conv_h.weight", (3, 0, 0, 0))
    r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "320", "-o", str(clean)])
    assert r.exit_code == 0, r.stderr
    for src, culprit in ((clean, None), (damaged, 9)):
        if precision == "fp16":
            half = src.with_suffix(".fp16.onnx")
            half.write_bytes(convert_fp16(src, None))
            src = half
        b = CliRunner().invoke(main, ["build", str(src), "--precision", precision, "-o", str(src.with_suffix(".engine"))])
        assert b.exit_code == 0, b.stderr
        typed = json.loads(src.with_suffix(".engine.json").read_text())["plan"]["strongly_typed"]
        assert typed == (precision == "fp16" and int(tensorrt_version().split(".")[0]) >= 10)
        p = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(src.with_suffix(".engine")),
                                      "--data", str(shapes), "--per-block", "--block-images", "4", "--json"])
        assert p.exit_code in (0, 1), p.stderr
        doc = json.loads(p.stdout)
        assert doc["culprit"] == culprit and len(doc["blocks"]) == 26 and doc["block_images"] == 4
        assert all(blk["local"] is not None for blk in doc["blocks"]), [blk.get("note") for blk in doc["blocks"]]
        if culprit is None:
            assert max(blk["local"]["rel"] for blk in doc["blocks"]) < bound
