"""The TensorRT lint on tiny graphs made with onnx.helper: each refusal names the node."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from attn_deploy.cli import main
from attn_deploy.exporter import lint_onnx
from attn_deploy.exporter.lint import support_table


def graph(nodes, inputs, outputs, inits=(), opset=17, domains=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=imports)


def vi(name, dtype=TensorProto.FLOAT, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, None if shape is None else list(shape))


def const(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def only(report, op):
    assert not report.passed and len(report.findings) >= 1
    f = report.findings[0]
    assert f.op == op and f.node == f"bad_{op}" and f.fix
    return f


def test_table_is_tensorrt_10_15_facts() -> None:
    t = support_table()
    assert len(t) == 200 and sum(s.supported for s in t.values()) == 158
    assert t["Conv"].types == {"FP32", "FP16", "BF16"} and not t["Unique"].supported
    assert "3840" in t["TopK"].note


def test_a_plain_graph_passes() -> None:
    m = graph([helper.make_node("Relu", ["x"], ["y"], name="ok")], [vi("x")], [vi("y")])
    assert lint_onnx(m).passed


def test_custom_domain_is_refused() -> None:
    n = helper.make_node("EfficientNMS_TRT", ["x"], ["y"], name="bad_EfficientNMS_TRT", domain="trt.plugins")
    f = only(lint_onnx(graph([n], [vi("x")], [vi("y")], domains=["trt.plugins"])), "EfficientNMS_TRT")
    assert "custom domain 'trt.plugins'" in f.reason


def test_unsupported_and_unknown_ops_are_refused() -> None:
    n = helper.make_node("Unique", ["x"], ["y"], name="bad_Unique")
    assert "not supported" in only(lint_onnx(graph([n], [vi("x", shape=(5,))], [vi("y", shape=(None,))])), "Unique").reason
    n = helper.make_node("Swish", ["x"], ["y"], name="bad_Swish")  # opset 24; unknown to 10.x
    m = graph([n], [vi("x")], [vi("y")], opset=17)
    assert "not in TensorRT 10.15's" in only(lint_onnx(m), "Swish").reason


def test_float64_and_integer_math_are_refused() -> None:
    n = helper.make_node("Relu", ["x"], ["y"], name="bad_Relu")
    rep = lint_onnx(graph([n], [vi("x", TensorProto.DOUBLE)], [vi("y", TensorProto.DOUBLE)]))
    assert "DOUBLE input" in only(rep, "Relu").reason and any("float64 tensor" in f.reason for f in rep.findings)
    n = helper.make_node("Sigmoid", ["x"], ["y"], name="bad_Sigmoid")
    assert "INT64 input" in only(lint_onnx(graph([n], [vi("x", TensorProto.INT64)], [vi("y", TensorProto.INT64)])), "Sigmoid").reason
    n = helper.make_node("Add", ["a", "a"], ["y"], name="ok")  # INT64 Add is fine in 10.x
    assert lint_onnx(graph([n], [vi("a", TensorProto.INT64, (3,))], [vi("y", TensorProto.INT64, (3,))])).passed


def test_restrictions() -> None:
    x, y = vi("x"), vi("y")
    cases = [
        (helper.make_node("TopK", ["x", "k"], ["y", "i"], name="bad_TopK", axis=3), [const("k", [5000])], "K = 5000"),
        (helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="bad_ScatterND", reduction="add"),
         [const("i", [[0]]), numpy_helper.from_array(np.zeros((1, 3, 8, 8), np.float32), "u")], "reduction add"),
        (helper.make_node("Resize", ["x", "", "s"], ["y"], name="bad_Resize", mode="cubic"),
         [const("s", [1, 1, 2, 2], np.float32)], "mode cubic"),
        (helper.make_node("MaxPool", ["x"], ["y"], name="bad_MaxPool", kernel_shape=[3, 3], dilations=[2, 2]), [], "dilated"),
        (helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["y"], name="bad_QuantizeLinear"),
         [const("sc", 0.1, np.float32), const("zp", 3, np.int8)], "non-zero zero point"),
    ]
    for node, inits, reason in cases:
        outs = [y, vi("i", TensorProto.INT64)] if node.op_type == "TopK" else [y]
        rep = lint_onnx(graph([node], [x], outs, inits))
        assert reason in only(rep, node.op_type).reason, (node.op_type, rep.findings)


def test_runtime_axes_and_dynamic_eye_are_refused() -> None:
    shape_axes = helper.make_node("Shape", ["x"], ["s"], name="s", start=3)  # a computed axes tensor
    red = helper.make_node("ReduceMean", ["x", "s"], ["y"], name="bad_ReduceMean")
    m = graph([shape_axes, red], [vi("x")], [vi("y", shape=None)], opset=18)
    assert "axes computed at run time" in only(lint_onnx(m), "ReduceMean").reason
    eye = helper.make_node("EyeLike", ["x"], ["y"], name="bad_EyeLike")
    m = graph([eye], [vi("x", shape=("h", "h"))], [vi("y", shape=("h", "h"))])
    assert "dynamic input shape" in only(lint_onnx(m), "EyeLike").reason


def test_cli_exit_codes(tmp_path: Path) -> None:
    good, bad, junk = tmp_path / "good.onnx", tmp_path / "bad.onnx", tmp_path / "junk.onnx"
    onnx.save(graph([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], [vi("y")]), good)
    onnx.save(graph([helper.make_node("Unique", ["x"], ["y"], name="bad_Unique")], [vi("x", shape=(5,))], [vi("y", shape=(None,))]), bad)
    junk.write_bytes(b"\x00\x01garbage" * 10)
    r = CliRunner().invoke(main, ["lint", str(good)])
    assert r.exit_code == 0 and "compatible" in r.stdout
    r = CliRunner().invoke(main, ["lint", str(bad), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["findings"][0]["node"] == "bad_Unique" and doc["tensorrt"] == "10.15"
    assert "1 node(s) TensorRT would refuse" in r.stderr
    r = CliRunner().invoke(main, ["lint", str(junk)])
    assert r.exit_code == 2 and "is not an ONNX model" in r.stderr
    r = CliRunner().invoke(main, ["lint", str(tmp_path / "none.onnx")])
    assert r.exit_code == 2 and "ONNX file not found" in r.stderr
