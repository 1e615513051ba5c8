"""Targets: the facts against their sources, the parser tables against onnx-tensorrt's own text,
and known outcomes from public reports reproduced on our graphs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from attn_deploy.cli import main
from attn_deploy.errors import UserError
from attn_deploy.exporter import ExportSpec, export_model, lint_onnx
from attn_deploy.models import load_model
from attn_deploy.models.heads import set_end2end
from attn_deploy.targets import (
    PARSER_TABLES,
    check_build,
    check_precision,
    get_target,
    parser_table,
    parser_table_for,
    table_opsets,
    targets,
)
from attn_deploy.targets.dla import dla_report
from attn_deploy.targets.rewrite import rewrite_for

ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(__file__).parent / "sources" / "onnx-tensorrt"
sys.path.insert(0, str(ROOT / "tools"))
import parser_tables  # noqa: E402  (tools/ is not a package)

# parser table -> the onnx-tensorrt release branch whose operators.md it was made from
BRANCHES = {"8.2": "8.2-GA", "8.5": "8.5-GA", "8.6": "8.6-GA", "10.0": "10.1-GA"}
NAMED = ("nano-jp4.6", "xavier-jp5.1", "orin-jp5.1", "orin-jp6", "orin-jp7", "thor-jp7", "server-trt8.6",
         "server-trt10", "server-trt11")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


# ---- the data against its sources ----------------------------------------------------------


@pytest.mark.parametrize("version", sorted(BRANCHES))
def test_every_parser_table_row_is_its_sources_row(version: str) -> None:
    text = (SOURCES / f"operators-{BRANCHES[version]}.md").read_text()
    rows = parser_tables.parse(text)
    table = parser_table(version)
    assert len(rows) == len(table) > 150
    for r in rows:
        ours = table[r.op]
        assert (ours.supported, ours.types, ours.rules) == (r.supported, frozenset(r.types), r.rules), r.op
    assert table_opsets(version) == parser_tables.opset_range(text)


def test_the_tables_say_what_the_reports_say() -> None:
    # the differences users hit, read straight from the upstream text
    assert "| Mod | N |" in (SOURCES / "operators-8.2-GA.md").read_text()
    assert not parser_table("8.2")["Mod"].supported and parser_table("8.5")["Mod"].supported
    assert "LayerNormalization" not in parser_table("8.2")
    assert not parser_table("8.5")["LayerNormalization"].supported and parser_table("8.6")["LayerNormalization"].supported
    assert parser_table("8.2")["TopK"].rules == ("k-constant",) and not parser_table("8.6")["TopK"].rules
    assert "axes-constant" in parser_table("8.6")["Slice"].rules and "axes-constant" not in parser_table("10.15")["Slice"].rules
    assert table_opsets("8.2") == (1, 13) and table_opsets("8.6") == (1, 17) and table_opsets("10.0") == (9, 20)
    assert table_opsets("10.15") == (9, 24)


def test_named_targets_and_their_sources() -> None:
    got = {t.name: t for t in targets()}
    assert tuple(got) == NAMED
    quote = {name: t.source_of for name, t in got.items()}
    facts = {  # name: (TensorRT, DLA, cores, precisions, implicit INT8, FP16 flag)
        "nano-jp4.6": ("8.2", None, 0, {"fp16"}, True, True),
        "xavier-jp5.1": ("8.5", "xavier", 2, {"fp16", "int8"}, True, True),
        "orin-jp5.1": ("8.5", "orin", 2, {"fp16", "int8"}, True, True),
        "orin-jp6": ("10.3", "orin", 2, {"fp16", "int8"}, True, True),
        "orin-jp7": ("11.4", "orin", 2, {"fp16", "int8"}, False, False),
        "thor-jp7": ("11.4", None, 0, {"fp16", "int8"}, False, False),
    }
    for name, (trt, dla, cores, precisions, implicit, flag) in facts.items():
        t = got[name]
        assert (t.tensorrt, t.dla, t.dla_cores, set(t.precisions), t.implicit_int8, t.fp16_flag) == (
            trt, dla, cores, precisions, implicit, flag), name
        assert f"TensorRT {trt}" in _quote(t, "tensorrt"), name
    assert "Jetson nano" in _quote(got["nano-jp4.6"], "precisions") and "INT8 optimization is not available" in _quote(
        got["nano-jp4.6"], "precisions")
    assert "Nano" not in _quote(got["nano-jp4.6"], "dla")  # the modules with DLA cores, the Nano not among them
    assert "Jetson AGX Xavier Series | 2" in _quote(got["xavier-jp5.1"], "dla")
    assert "Jetson AGX Orin Series | 2" in _quote(got["orin-jp6"], "dla")
    assert "Jetson Thor, which has no DLA" in _quote(got["thor-jp7"], "dla")
    assert "JetPack 7.2.2" in _quote(got["orin-jp7"], "dla")
    for name in ("orin-jp7", "thor-jp7", "server-trt11"):
        assert "setInt8Calibrator" in _quote(got[name], "implicit_int8") and "kFP16" in _quote(got[name], "fp16_flag")
    assert "7.2 | Jetson AGX Xavier | No | Yes | Yes | Yes" in _quote(got["xavier-jp5.1"], "precisions")
    for t in got.values():
        for fact in t.sources:
            assert quote[t.name](fact).endswith(")") and "http" in quote[t.name](fact)
        assert t.parser == parser_table_for(t.tensorrt) and t.opsets == table_opsets(t.parser)


def _quote(t, fact: str) -> str:
    from attn_deploy.targets import _data

    return _data()["sources"][t.sources[fact]]["quote"]


def test_facts_for_a_box_not_listed() -> None:
    t = get_target("trt=8.6,dla=orin")
    assert (t.parser, t.opsets, t.dla, t.dla_cores, t.implicit_int8, t.strongly_typed) == ("8.6", (1, 17), "orin", 2, True, False)
    t = get_target("trt=11.1,int8=no")
    assert (t.parser, t.implicit_int8, t.fp16_flag, t.strongly_typed, set(t.precisions)) == ("10.15", False, False, True, {"fp16"})
    assert get_target("trt=10.3").parser == "10.0" and get_target("trt=10.16").parser == "10.15"
    assert get_target("trt=8.4").parser == "8.2"  # no 8.4 table here: the older one, the cautious one


@pytest.mark.parametrize("spec, words", [
    ("jetson", "unknown target 'jetson'"), ("trt=abc", "trt= takes a TensorRT version"), ("dla=orin", "trt= takes"),
    ("trt=8.6,dla=pva", "dla is one of"), ("trt=8.6,cores=2", "cores is a count"), ("trt=8.6,gpu", "is not one of"),
    ("trt=8.6,int8=maybe", "int8 is yes or no"), ("trt=7.1", "no parser table on record before 8.2"),
])
def test_bad_targets_are_one_line(spec: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        get_target(spec)
    r = run("lint", "nothing.onnx", "--target", spec)
    assert r.exit_code == 2 and words.split("'")[0] in r.output and "Traceback" not in r.output


def test_precisions_and_builds_refused_for_the_box() -> None:
    nano, orin, thor, trt11 = (get_target(n) for n in ("nano-jp4.6", "orin-jp6", "thor-jp7", "server-trt11"))
    with pytest.raises(UserError, match="Maxwell .* has no fast INT8"):
        check_precision(nano, "int8")
    check_precision(nano, "fp16")
    with pytest.raises(UserError, match="has no fast INT8"):
        check_build(nano, "fp32", "int8", None, False)  # a Q/DQ ONNX carries INT8
    with pytest.raises(UserError, match="thor-jp7 has no DLA"):
        check_build(thor, "fp16", "fp32", 0, False)
    with pytest.raises(UserError, match="has 2 DLA core"):
        check_build(orin, "fp16", "fp32", 2, False)
    with pytest.raises(UserError, match="FP16 and INT8 only"):
        check_build(orin, "fp32", "fp32", 0, False)
    with pytest.raises(UserError, match="no implicit INT8 calibrator"):
        check_build(trt11, "int8", "fp32", None, True)
    check_build(orin, "int8", "fp32", 1, True)


# ---- known outcomes from public reports ----------------------------------------------------


@pytest.fixture(scope="module")
def yolo26_end2end(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "yolo26n-e2e.onnx"
    net = set_end2end(load_model("yolo26n"), 300)
    assert export_model(net, out, ExportSpec((320, 320)), check=False).onnx
    return out


def test_yolo26_mod_is_refused_on_tensorrt_8_2(yolo26_end2end: Path) -> None:
    # ultralytics #24607: the one-to-one head's class index (index % classes) fails on JetPack 4
    report = lint_onnx(yolo26_end2end, get_target("nano-jp4.6"))
    mods = [f for f in report.findings if f.op == "Mod"]
    assert len(mods) == 1 and mods[0].layer == 23 and "8.2" in mods[0].reason and "export --target" in mods[0].fix
    assert any(f.op == "(opset)" and "opset 17" in f.reason for f in report.findings)
    assert lint_onnx(yolo26_end2end, get_target("orin-jp5.1")).passed
    r = run("lint", str(yolo26_end2end), "--target", "all", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and [t["passed"] for t in doc["targets"]] == [n != "nano-jp4.6" for n in NAMED]
    assert doc["targets"][0]["findings"][-1]["module"] == "Detect"


def test_export_for_the_nano_rewrites_mod_and_passes_its_own_checks(tmp_path: Path) -> None:
    out = tmp_path / "e2e.onnx"
    r = run("export", "--model", "yolo26n", "--end2end", "--imgsz", "320", "--target", "nano-jp4.6", "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["opset"] == 13 and doc["passed"] and doc["parity"]["passed"]
    assert doc["lint"]["target"] == "nano-jp4.6" and doc["lint"]["passed"]
    assert [x["op"] for x in doc["target"]["rewrites"]] == ["Mod"]
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "Mod" not in ops and {"Div", "Sub", "Less"} <= ops
    assert json.loads(out.with_suffix(".json").read_text())["target"]["name"] == "nano-jp4.6"
    r = run("export", "--model", "yolo26n", "--imgsz", "320", "--target", "nano-jp4.6", "--opset", "17", "-o", str(out))
    assert r.exit_code == 2 and "parses opsets 1 to 13" in r.output


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_rewrite_is_exact_for_every_sign(fmod: int) -> None:
    a = np.arange(-50, 51, dtype=np.int64)
    b = np.resize(np.array([7, -7, 3, -2, 80], np.int64), a.shape)
    m = _graph([helper.make_node("Mod", ["a", "b"], ["y"], name="m", fmod=fmod)],
               [("a", TensorProto.INT64, [101]), ("b", TensorProto.INT64, [101])], ("y", TensorProto.INT64, [101]), 13)
    before = _ort(m, a=a, b=b)
    assert before.tolist() == (np.fmod(a, b) if fmod else np.mod(a, b)).tolist()
    assert [x.op for x in rewrite_for(m, parser_table("8.2"))] == ["Mod"]
    assert np.array_equal(_ort(m, a=a, b=b), before)


def test_layer_normalization_refused_on_8_5_and_written_out() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 32)).astype(np.float32) * 3 + 1
    inits = [numpy_helper.from_array(rng.normal(size=32).astype(np.float32), "g"),
             numpy_helper.from_array(rng.normal(size=32).astype(np.float32), "b")]
    m = _graph([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1, epsilon=1e-5)],
               [("x", TensorProto.FLOAT, [2, 16, 32])], ("y", TensorProto.FLOAT, [2, 16, 32]), 17, inits)
    xavier, server = get_target("xavier-jp5.1"), get_target("server-trt8.6")
    found = lint_onnx(m, xavier).findings
    assert [f.op for f in found] == ["LayerNormalization"] and "8.5" in found[0].reason
    assert lint_onnx(m, server).passed
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * numpy_helper.to_array(inits[0]) + numpy_helper.to_array(inits[1])
    assert np.abs(_ort(m, x=x) - expected).max() < 1e-5
    assert [r.op for r in rewrite_for(m, parser_table(xavier.parser), xavier)] == ["LayerNormalization"]
    assert lint_onnx(m, xavier).passed
    assert np.abs(_ort(m, x=x) - expected).max() < 1e-5


@pytest.fixture(scope="module")
def yolo11n(tmp_path_factory) -> onnx.ModelProto:
    out = tmp_path_factory.mktemp("y11") / "yolo11n.onnx"
    export_model(load_model("yolo11n"), out, ExportSpec((320, 320)), check=False)
    return onnx.load(out)


def test_attention_product_falls_off_the_dla_and_softmax_off_xaviers(yolo11n: onnx.ModelProto) -> None:
    # DeepStream-Yolo #27, ultralytics #23488: attention and head layers leave the DLA
    orin = {p.node: p for p in dla_report(yolo11n, get_target("orin-jp6")).placements}
    xavier = {p.node: p for p in dla_report(yolo11n, get_target("xavier-jp5.1")).placements}
    matmuls = [n for n, p in orin.items() if p.op == "MatMul"]
    softmax = [n for n, p in orin.items() if p.op == "Softmax"]
    assert len(matmuls) == 2 and all(n.startswith("/model.10/") for n in matmuls)
    assert all(not orin[n].dla and "two computed tensors" in orin[n].why for n in matmuls)
    assert softmax and all(orin[n].dla for n in softmax)  # Orin's DLA has SoftMax over a 4-D axis
    assert all(not xavier[n].dla and "Xavier" in xavier[n].why for n in softmax)


def test_silu_runs_on_the_dla_as_its_two_nodes(yolo11n: onnx.ModelProto) -> None:
    report = dla_report(yolo11n, get_target("orin-jp6"))
    stem = [p for p in report.placements if p.node.startswith("/model.0/")]
    assert [p.op for p in stem] == ["Conv", "Sigmoid", "Mul"] and all(p.dla for p in stem)
    assert 0.99 < report.share <= 1.0 and report.switches > 0  # the head's decode and the attention product cross


def test_a_dynamic_graph_is_refused_for_the_dla(tmp_path: Path) -> None:
    out = tmp_path / "dyn.onnx"
    export_model(load_model("yolov5n"), out, ExportSpec((320, 320), dynamic=True), check=False)
    report = dla_report(onnx.load(out), get_target("orin-jp6"))
    assert "dynamic input 'images'" in report.refused and report.share == 0 and not any(p.dla for p in report.placements)
    r = run("build", str(out), "--target", "orin-jp6", "--dla-core", "0", "--precision", "fp16")
    assert r.exit_code == 2 and "dynamic input" in r.output


def test_int8_refused_on_the_nano(tmp_path: Path) -> None:
    out = tmp_path / "n.onnx"
    export_model(load_model("yolov5n"), out, ExportSpec((320, 320)), check=False)
    for verb in (["calib", str(out), "--precision", "int8"], ["build", str(out), "--precision", "int8"]):
        r = run(*verb, "--target", "nano-jp4.6")
        assert r.exit_code == 2 and "Maxwell (sm_53) GPU has no fast INT8" in r.output and len(r.output.splitlines()) == 1


@pytest.mark.parametrize("key", ["se", "ca", "cbam"])
@pytest.mark.parametrize("size", [320, 640])
def test_dla_rewrites_keep_attention_on_the_dla_and_pass_parity(tmp_path: Path, key: str, size: int) -> None:
    """Every rewrite is checked by the export's own parity against PyTorch, at two sizes (layer 9
    is 10 and 20 wide: pools of 5 x 2 and 5 x 4)."""
    plain = tmp_path / "plain.onnx"
    export_model(load_model(f"yolov5n-{key}"), plain, ExportSpec((size, size)), check=False)
    before = dla_report(onnx.load(plain), get_target("orin-jp6"))
    out = tmp_path / "t.onnx"
    result = export_model(load_model(f"yolov5n-{key}"), out, ExportSpec((size, size)), target=get_target("orin-jp6"))
    assert result.passed and result.parity.passed, result.failures()
    rewrites = result.extra["target"]["rewrites"]
    assert rewrites and all(r["node"].startswith("/model.9/") for r in rewrites)
    after = dla_report(onnx.load(out), get_target("orin-jp6"))
    spatial = [p for p in before.fallbacks() if p.layer == 9 and p.op in ("ReduceMean", "ReduceMax", "GlobalAveragePool")]
    assert spatial and {r["node"] for r in rewrites} >= {p.node for p in spatial if _over_hw(plain, p.node)}
    left = [p for p in after.fallbacks() if p.layer == 9 and p.op.startswith(("Reduce", "Global", "Div", "AveragePool"))]
    assert all(not _over_hw(out, p.node) for p in left)  # what stays off: CBAM's mean and max over channels
    assert after.switches <= before.switches


def _over_hw(path: Path, node_name: str) -> bool:
    node = next(n for n in onnx.load(path).graph.node if n.name == node_name)
    if node.op_type.startswith("Global"):
        return True
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), [])
    return bool(axes) and {a % 4 for a in axes} <= {2, 3}


def test_an_extent_with_a_large_prime_keeps_its_reduce(tmp_path: Path) -> None:
    # at 416 layer 9 is 13 wide: no pools of at most 8 make 13, so SE's mean stays on the GPU, said so
    out = tmp_path / "se.onnx"
    result = export_model(load_model("yolov5n-se"), out, ExportSpec((416, 416)), target=get_target("orin-jp6"))
    assert result.passed and not [r for r in result.extra["target"]["rewrites"] if r["op"] != "Div"]
    off = [p for p in dla_report(onnx.load(out), get_target("orin-jp6")).fallbacks() if p.layer == 9]
    assert off and all("Reduce layer" in p.why for p in off)


def test_pool_windows_factor_the_extent() -> None:
    from attn_deploy.targets.rewrite import _pool_windows

    assert _pool_windows(20) == [5, 4] and _pool_windows(40) == [8, 5] and _pool_windows(80) == [8, 5, 2]
    assert _pool_windows(8) == [8] and _pool_windows(1) == [] and _pool_windows(13) is None and _pool_windows(22) is None


def test_a_target_that_takes_the_graph_changes_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_model(load_model("yolov5n-ca"), a, ExportSpec((320, 320)), check=False)
    export_model(load_model("yolov5n-ca"), b, ExportSpec((320, 320)), check=False, target=get_target("server-trt10"))
    assert a.read_bytes() == b.read_bytes()
    assert "target" not in json.loads(a.with_suffix(".json").read_text())


def test_targets_verb_lists_every_target() -> None:
    r = run("targets", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and [t["name"] for t in doc["targets"]] == list(NAMED)
    assert all(all("http" in s for s in t["sources"].values()) for t in doc["targets"])
    assert {t["parser_table"] for t in doc["targets"]} == set(PARSER_TABLES)


def _graph(nodes, inputs, output, opset, inits=()):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(*output)], initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model: onnx.ModelProto, **feeds: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_serve_for_a_target(tmp_path: Path, yolo26_end2end: Path) -> None:
    r = run("serve", str(yolo26_end2end), "--repository", str(tmp_path / "repo"), "--target", "nano-jp4.6")
    assert r.exit_code == 2 and "does not parse on nano-jp4.6" in r.output and "/model.23/Mod" not in r.output.split(":")[0]
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
    r = run("serve", str(yolo26_end2end), "--repository", str(tmp_path / "repo"), "--target", "orin-jp6")
    assert r.exit_code == 0, r.output
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    export = json.loads(yolo26_end2end.with_suffix(".json").read_text())  # what build's sidecar carries
    engine.with_name("m.engine.json").write_text(json.dumps({"tensorrt": "10.3.0", "export": export, "profiles": [],
                                                             "target": {"name": "orin-jp6"}}))
    r = run("serve", str(engine), "--repository", str(tmp_path / "repo2"), "--target", "orin-jp5.1")
    assert r.exit_code == 2 and "was built for orin-jp6, not orin-jp5.1" in r.output


def test_the_api_refuses_an_opset_the_target_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="parses opsets 1 to 13"):
        export_model(load_model("yolov5n"), tmp_path / "x.onnx", ExportSpec((320, 320), opset=17), target=get_target("nano-jp4.6"))
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.needs_trt
def test_the_installed_parser_agrees_with_its_table(yolo26_end2end: Path, tmp_path: Path) -> None:
    """On a machine with TensorRT: its own ONNX parser agrees with lint's verdict for its version
    on the end-to-end YOLO26 graph, and takes the graph rewritten for 8.2. The DLA placement
    needs a Jetson and is not tested here."""
    import tensorrt as trt

    version = ".".join(trt.__version__.split(".")[:2])
    mine = get_target(f"trt={version}")

    def parses(path: Path) -> bool:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        network = builder.create_network(0)
        return bool(trt.OnnxParser(network, builder.logger).parse(path.read_bytes()))

    assert parses(yolo26_end2end) == lint_onnx(yolo26_end2end, mine).passed
    nano = tmp_path / "nano.onnx"
    r = run("export", "--model", "yolo26n", "--end2end", "--imgsz", "320", "--target", "nano-jp4.6", "-o", str(nano))
    assert r.exit_code == 0 and parses(nano)
