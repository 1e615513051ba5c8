"""calib: the exclusion decision on constructed tables, the TensorRT cache format, the ONNX
Runtime guard, the candidate groups, and INT8 for every attention key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from attn_deploy.calib.cache import activation_scales, read_cache, write_cache
from attn_deploy.calib.groups import candidate_groups
from attn_deploy.calib.int8 import quantize_int8, require_ort_for_int8
from attn_deploy.calib.search import Sensitivity, choose
from attn_deploy.cli import main
from attn_deploy.engines import OnnxrtRunner
from attn_deploy.errors import UserError
from attn_deploy.exporter import lint_onnx
from attn_deploy.exporter.export import layer_table
from attn_deploy.exporter.layers import find_boundaries, model_rows
from attn_deploy.exporter.torch2onnx import ExportSpec, torch_to_onnx
from attn_deploy.models.attention import list_attention
from attn_deploy.models.zoo import create_model
from attn_deploy.parity.tensor import compare

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"


def row(name: str, kept: float, alone: float = 0.0) -> Sensitivity:
    return Sensitivity(name, int(name[1:]), "M", False, kept, alone)


def measuring(table: dict[tuple[str, ...], float], calls: list[list[str]]):
    def measure(names: list[str]) -> float:
        calls.append(list(names))
        return table[tuple(names)]
    return measure


def test_nothing_kept_when_naive_is_within_budget() -> None:
    d = choose(0.4, [row("g1", 0.1)], 0.5, measuring({}, []))
    assert d.kept == [] and d.within and d.damage == 0.4


def test_one_group_when_one_suffices_the_one_leaving_least() -> None:
    calls: list[list[str]] = []
    d = choose(3.0, [row("g1", 0.45), row("g2", 0.3), row("g3", 2.0)], 0.5, measuring({}, calls))
    assert d.kept == ["g2"] and d.damage == 0.3 and d.within and calls == []


def test_groups_added_by_benefit_until_within_budget() -> None:
    calls: list[list[str]] = []
    table = {("g2", "g1"): 0.9, ("g2", "g1", "g3"): 0.4}
    d = choose(3.0, [row("g1", 1.5), row("g2", 1.0), row("g3", 2.5)], 0.5, measuring(table, calls))
    assert d.kept == ["g2", "g1", "g3"] and d.damage == 0.4 and d.within
    assert calls == [["g2", "g1"], ["g2", "g1", "g3"]]  # the first step is known from the table
    assert d.trials == [(["g2"], 1.0), (["g2", "g1"], 0.9), (["g2", "g1", "g3"], 0.4)]


def test_a_group_that_does_not_help_is_not_kept() -> None:
    table = {("g1", "g2"): 1.1, ("g1", "g3"): 0.45}
    d = choose(3.0, [row("g1", 1.0), row("g2", 1.2), row("g3", 2.0)], 0.5, measuring(table, []))
    assert d.kept == ["g1", "g3"] and d.damage == 0.45 and d.trials[1] == (["g1", "g2"], 1.1)


def test_budget_out_of_reach_is_said() -> None:
    d = choose(3.0, [row("g1", 2.0), row("g2", 2.5)], 0.5, measuring({("g1", "g2"): 1.2}, []))
    assert not d.within and d.kept == ["g1", "g2"] and d.damage == 1.2


def test_widening_starts_from_what_is_kept() -> None:
    calls: list[list[str]] = []
    d = choose(1.2, [row("g7", 0.9), row("g8", 0.6)], 0.5, measuring({("g1", "g8"): 0.45}, calls),
               start=["g1"], start_damage=1.2)
    assert d.kept == ["g1", "g8"] and d.within and calls == [["g1", "g8"]]


def qdq_graph() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.0125]), helper.make_tensor("z", TensorProto.INT8, [], [0]),
             helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [1, 2, 3, 4]), helper.make_tensor("ws", TensorProto.FLOAT, [], [0.03])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("QuantizeLinear", ["w", "ws", "z"], ["wq"]), helper.make_node("DequantizeLinear", ["wq", "ws", "z"], ["wd"]),
             helper.make_node("Add", ["xd", "wd"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


def test_calibration_cache_round_trips(tmp_path: Path) -> None:
    scales = activation_scales(qdq_graph())
    assert scales == {"x": pytest.approx(0.0125)}  # the weight's quantizer is not an activation
    f = write_cache({**scales, "/model.0/conv/Conv_output_0": 0.5}, tmp_path / "calib.cache")
    lines = f.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2" and lines[1] == "/model.0/conv/Conv_output_0: 3f000000"
    header, back = read_cache(f)
    assert header == lines[0] and back == {"/model.0/conv/Conv_output_0": 0.5, "x": np.float32(0.0125)}
    (tmp_path / "bad.cache").write_text("not a cache\n")
    with pytest.raises(UserError, match="not a TensorRT calibration cache"):
        read_cache(tmp_path / "bad.cache")


def test_int8_accuracy_needs_onnxruntime_1_30(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    assert require_ort_for_int8() == onnxruntime.__version__
    monkeypatch.setattr(onnxruntime, "__version__", "1.24.4")
    with pytest.raises(UserError, match="rounds QuantizeLinear wrongly"):
        require_ort_for_int8()


def test_candidate_groups_are_first_conv_attention_and_detect() -> None:
    net = create_model("yolov5n-cbam", nc=3)
    model = onnx.load_from_string(torch_to_onnx(net, ExportSpec((64, 64), 1)))
    groups = candidate_groups(model, layer_table(net, model))
    assert [g.name for g in groups] == ["model.0 Conv", "model.9 CBAM", "model.25 Detect"]
    assert all(n.startswith(f"/model.{g.layer}/") for g in groups for n in g.nodes)
    assert [g.layer for g in candidate_groups(model, None)] == [0, 25]  # without a sidecar


@pytest.mark.parametrize("key", list_attention())
def test_every_attention_key_quantizes_to_a_clean_runnable_graph(key: str, tmp_path: Path) -> None:
    net = create_model(f"yolov5n-{key}", nc=3)
    src = tmp_path / "m.onnx"
    src.write_bytes(torch_to_onnx(net, ExportSpec((128, 128), 1)))
    images = np.random.default_rng(0).random((4, 3, 128, 128), dtype=np.float32)
    written = src.stat().st_mtime_ns
    q = onnx.load_from_string(quantize_int8(src, images, "max"))
    assert src.stat().st_mtime_ns == written  # the input file is never touched
    onnx.checker.check_model(q)
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 50
    assert all(n.domain in ("", "ai.onnx") for n in q.graph.node)
    assert lint_onnx(q).passed
    feed = {"images": images[:1]}
    got, want = OnnxrtRunner(q.SerializeToString()).run(feed)["output0"], OnnxrtRunner(src).run(feed)["output0"]
    assert got.shape == want.shape and np.isfinite(got).all()
    assert compare("boxes", want[..., :4], got[..., :4], 0, 0).cosine > 0.99
    rows = model_rows(net)  # the layer boundaries are the same tensors, before every QuantizeLinear
    assert find_boundaries(q, rows) == find_boundaries(onnx.load(src), rows)


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from attn_deploy.train.shapes import write_dataset

    root = tmp_path_factory.mktemp("calib")
    data = write_dataset(root / "shapes", train=16, val=24)
    r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "320", "-o", str(root / "demo.onnx")])
    assert r.exit_code == 0, r.stderr
    return root / "demo.onnx", data


def test_fp16_of_the_demo_keeps_its_accuracy(demo_onnx: tuple[Path, Path]) -> None:
    src, data = demo_onnx
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "fp16", "--data", str(data), "--images", "8", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["damage"] < 0.5 and doc["final"]["agreement"] > 0.98  # 24 images: 0.02 points on all 300
    side = json.loads(src.with_name("demo.fp16.json").read_text())
    assert side["precision"]["precision"] == "fp16" and side["names"] == ["circle", "square", "triangle", "cross", "ring"]
    q = onnx.load(src.with_name("demo.fp16.onnx"))
    assert q.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # float32 I/O kept


def test_int8_of_the_demo_writes_a_proved_qdq_graph_and_parity_reads_it(demo_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    src, data = demo_onnx
    out, cache = tmp_path / "demo.int8.onnx", tmp_path / "demo.cache"
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--data", str(data), "--images", "16",
                                  "--exclude", "none", "--max-map-drop", "50", "-o", str(out), "--cache", str(cache), "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["lint_passed"] and doc["naive"] == doc["final"] and doc["excluded_groups"] == []
    assert 0 < doc["final"]["map50"] <= 1 and doc["calibration"]["images"] == 16
    assert len(read_cache(cache)[1]) > 50
    side = json.loads(out.with_suffix(".json").read_text())
    exported = json.loads(src.with_suffix(".json").read_text())
    assert side["layers"] == exported["layers"] and side["layers"][9]["output"].startswith("/model.9/")
    p = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(out), "--data", str(data), "--json",
                                  "--per-block", "--block-images", "2"])
    doc = json.loads(p.stdout)
    assert p.exit_code in (0, 1) and doc["detections"]["matched"] > 50
    local = [b["local"]["rel"] for b in doc["blocks"]]
    assert len(local) == 26 and all(x is not None for x in local) and max(local) > 1e-2  # INT8 error, measured


@pytest.mark.needs_trt
@pytest.mark.needs_cuda
def test_implicit_int8_engine_from_the_cache(demo_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    from attn_deploy.engines.trt import tensorrt_version

    if int(tensorrt_version().split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 removed implicit INT8 (calibrators and the INT8 flag): build the Q/DQ ONNX")
    src, data = demo_onnx
    cache = tmp_path / "c.cache"
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--data", str(data), "--images", "8",
                                  "--exclude", "none", "--max-map-drop", "50", "--cache", str(cache), "-o", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.stderr
    b = CliRunner().invoke(main, ["build", str(src), "--precision", "int8", "--calib-cache", str(cache), "-o", str(tmp_path / "i8.engine")])
    assert b.exit_code == 0, b.stderr
    side = json.loads((tmp_path / "i8.engine.json").read_text())
    assert side["plan"]["int8"] and not side["plan"]["strongly_typed"] and side["calib_cache"]["path"] == str(cache.resolve())
    assert read_cache(cache)[0] == "TRT-8601-EntropyCalibration2"  # the user's file is not rewritten
    p = CliRunner().invoke(main, ["parity", "--weights", str(DEMO), "--against", str(tmp_path / "i8.engine"), "--data", str(data), "--json"])
    assert p.exit_code in (0, 1), p.stderr
    assert json.loads(p.stdout)["detections"]["agreement"] > 0.8


def test_ranked_search_keeps_a_prefix_of_the_ranking_and_reports_the_full_score(demo_onnx: tuple[Path, Path],
                                                                                tmp_path: Path) -> None:
    from attn_deploy.calib.calibrate import CalibOptions, calibrate

    src, data = demo_onnx
    none = calibrate(src, CalibOptions(data=data, images=16, exclude=("none",), output=tmp_path / "none.onnx"))
    assert none.damage > 0.2 and none.stages["calibration"] > 0 and "ranking" not in none.stages
    budget = none.damage / 3
    opts = CalibOptions(data=data, images=16, max_map_drop=budget, output=tmp_path / "auto.onnx", search_images=12,
                        min_int8=0.0)  # the search's mechanics, whatever its coverage
    r = calibrate(src, opts)
    doc = json.loads((tmp_path / "auto.json").read_text())["precision"]
    order = [e["name"] for e in doc["ranking"]]
    assert doc["search"] == "ranked" and len(order) == 26 and doc["search_images"] in (12, 24) and doc["val_images"] == 24
    prefixes = [kept for kept, _ in r.decision.trials if kept == order[: len(kept)]]
    assert prefixes and prefixes[0] == order[:1]  # 1, 2, 4, ... then halving; then pruning within those
    assert r.kept and set(r.kept) <= set(order[: max(len(k) for k in [*prefixes, r.kept])])
    assert set(doc["stages"]) >= {"reference", "calibration", "naive", "ranking", "trials", "final", "total"}
    # what is reported is the chosen graph scored on all 24 images, not a subset trial
    ev_score = calibrate(src, CalibOptions(data=data, images=16, exclude=tuple(f"^/model\\.{k.split()[0][6:]}/"
                                                                               for k in r.kept),
                                           max_map_drop=budget, output=tmp_path / "same.onnx", min_int8=0.0))
    assert ev_score.final == r.final and r.passed == (r.damage <= budget) and doc["passed"] == r.passed
    assert onnx.load(tmp_path / "auto.onnx").SerializeToString() == onnx.load(tmp_path / "same.onnx").SerializeToString()


def test_a_model_that_detects_nothing_is_not_calibrated(demo_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    """A gate never passes on nothing: a float32 model with no detections (random weights)
    would lose nothing in INT8 and pass any budget."""
    _, data = demo_onnx
    src = tmp_path / "random.onnx"
    src.write_bytes(torch_to_onnx(create_model("yolov5n-ca", nc=5), ExportSpec((320, 320), 1)))
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--data", str(data), "--images", "4"])
    assert r.exit_code == 2 and "there is no accuracy to keep" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "random.int8.onnx").exists()
