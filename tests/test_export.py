"""Export: every model, static and dynamic, two opsets; checker, lint and parity on each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from attn_deploy.cli import main
from attn_deploy.engines import OnnxrtRunner
from attn_deploy.exporter import ExportSpec, NmsOptions, export_model, lint_onnx
from attn_deploy.exporter.parity_check import random_images
from attn_deploy.models import create_model, list_attention
from attn_deploy.models.yolo import DetectionModel
from attn_deploy.parity import Tolerances, multiclass_nms

KEYS = ["none", *list_attention()]
_MODELS: dict[str, DetectionModel] = {}


def model(key: str) -> DetectionModel:
    if key not in _MODELS:
        _MODELS[key] = create_model("yolov5n" if key == "none" else f"yolov5n-{key}")
    return _MODELS[key]


@pytest.mark.parametrize("opset", [17, 13])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("key", KEYS)
def test_export_matrix(tmp_path: Path, key: str, dynamic: bool, opset: int) -> None:
    path = tmp_path / f"{key}.onnx"
    result = export_model(model(key), path, ExportSpec((320, 320), batch=1, dynamic=dynamic, opset=opset))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= {""} and proto.opset_import[0].version == opset
    assert lint_onnx(path).passed
    assert not any(n.op_type == "Identity" for n in proto.graph.node)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", 3, "height", "width"] if dynamic else [1, 3, 320, 320])
    assert [o.name for o in proto.graph.output] == ["output0"] and proto.graph.input[0].name == "images"
    # the bar (scores 1e-4 abs, boxes 1e-3 px + 1e-5 rel), and what we actually reach
    stats = {s.name: s for s in result.parity.stats}
    assert result.passed, result.failures()
    assert stats["output0.scores"].max_abs < 1e-6 and stats["output0.boxes"].max_abs < 2.5e-4
    assert min(s.cosine for s in stats.values()) > 0.999999
    if dynamic:
        assert {tuple(c[2:]) for c in result.parity.cases} == {(320, 320), (224, 416)}
        assert {c[0] for c in result.parity.cases} == {1, 2}


def test_same_model_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    for nms in (None, NmsOptions()):
        a = export_model(create_model("yolov5n-sa"), tmp_path / "a.onnx", ExportSpec((256, 256), dynamic=True), nms, check=False)
        b = export_model(create_model("yolov5n-sa"), tmp_path / "b.onnx", ExportSpec((256, 256), dynamic=True), nms, check=False)
        assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes() and a.sha256 == b.sha256


def detector_with_spread_scores() -> DetectionModel:
    """Random weights score every box alike; spread the head's biases so NMS has real work."""
    m = create_model("yolov5n-cbam", nc=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in m.detect.m:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 2)
    return m


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_nms_graph_matches_numpy_nms_of_pytorch_output(tmp_path: Path, dynamic: bool) -> None:
    net = detector_with_spread_scores()
    opts = NmsOptions(topk=300, iou_thres=0.5, conf_thres=0.7)
    result = export_model(net, tmp_path / "e2e.onnx", ExportSpec((256, 320), batch=2, dynamic=dynamic), opts)
    assert result.passed, result.failures()
    proto = onnx.load(str(tmp_path / "e2e.onnx"))
    assert [o.name for o in proto.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert "NonMaxSuppression" in result.ops and lint_onnx(proto).passed
    x = random_images(2, 256, 320, seed=7)
    got = OnnxrtRunner(tmp_path / "e2e.onnx").run({"images": x})
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).numpy()
    assert got["num_dets"].dtype == np.int32 and got["det_classes"].dtype == np.int32
    for i in range(2):
        want = multiclass_nms(pred[i], 0.5, 0.7, 300)
        n = int(got["num_dets"][i, 0])
        assert n == len(want) > 10 and n < 300  # all kept detections, no top-K truncation
        # equal scores (this net gives many) may come out in any order: sort both sides alike
        key = lambda b, c, s: np.lexsort((b[:, 1].round(2), b[:, 0].round(2), c, -s.round(5)))  # noqa: E731
        order = key(want.boxes, want.classes, want.scores)
        mine = key(got["det_boxes"][i, :n], got["det_classes"][i, :n], got["det_scores"][i, :n])
        np.testing.assert_array_equal(got["det_classes"][i, :n][mine], want.classes[order])
        np.testing.assert_allclose(got["det_boxes"][i, :n][mine], want.boxes[order], atol=1e-3)
        np.testing.assert_allclose(got["det_scores"][i, :n][mine], want.scores[order], atol=1e-5)
        assert (got["det_classes"][i, n:] == -1).all() and not got["det_scores"][i, n:].any()


def test_parity_failure_is_reported_with_the_excess(tmp_path: Path) -> None:
    strict = Tolerances(box_atol=1e-9, box_rtol=0, score_atol=1e-12)
    result = export_model(model("none"), tmp_path / "m.onnx", ExportSpec((256, 256)), tol=strict)
    assert not result and any(f.startswith("output0.scores: max abs") for f in result.failures())
    assert all("x the float32 noise of this model" in f for f in result.failures())  # how far beyond noise
    side = json.loads((tmp_path / "m.json").read_text())  # the file stays, for inspection, marked failed
    assert side["parity"]["passed"] is False and result.to_dict()["parity"]["passed"] is False
    assert side["parity"]["outputs"]["output0.boxes"]["atol"] == 1e-9  # an explicit tol is used as given


def test_sidecar_holds_what_later_steps_need(tmp_path: Path) -> None:
    result = export_model(model("ca"), tmp_path / "m.onnx", ExportSpec((320, 256), dynamic=True))
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["model"] == "yolov5n-ca" and side["strides"] == [8, 16, 32] and side["nc"] == 80
    assert side["imgsz"] == [320, 256] and side["opset"] == 17 and side["dynamic"] is True
    assert side["onnx"]["sha256"] == result.sha256 and len(side["names"]) == 80
    assert side["inputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}]
    assert side["outputs"][0]["shape"] == ["batch", "boxes", 85] and side["parity"]["passed"]
    noise, boxes = side["parity"]["noise"], side["parity"]["outputs"]["output0.boxes"]
    assert noise["factor"] == 16 and noise["case"] == [1, 3, 320, 256] and 0 < noise["boxes"] < 1e-3
    assert boxes["noise"] == noise["boxes"] and boxes["noise_ratio"] == boxes["max_abs"] / noise["boxes"]
    assert side["anchors"][0] == [[10, 13], [16, 30], [33, 23]]


# ---- the CLI ---------------------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_cli_export_json(tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    code, stdout, _ = cli("export", "--model", "yolov5n-eca", "--imgsz", "256", "--dynamic", "-o", str(out), "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["passed"] and doc["onnx"] == str(out) and out.exists() and out.with_suffix(".json").exists()


@pytest.mark.parametrize(
    "args,message",
    [(["--opset", "12"], "--opset 12 is not supported"), (["--imgsz", "300"], "not a multiple of the model's stride"),
     (["--nms", "--topk", "5000"], "--topk must be between 1 and 3839"), (["-o", "/nonexistent/dir/m.onnx"], "folder /nonexistent/dir does not exist")],
)
def test_cli_export_bad_options_leave_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("export", "--model", "yolov5n", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_cli_export_exits_1_when_parity_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attn_deploy.exporter as pkg

    real = pkg.export_model

    def strict(*a, **kw):  # the CLI's own call, with tolerances nothing can meet
        return real(*a, **kw, tol=Tolerances(box_atol=1e-9, box_rtol=0, score_atol=1e-12))

    monkeypatch.setattr(pkg, "export_model", strict)
    code, _, err = cli("export", "--model", "yolov5n", "--imgsz", "128", "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and "export checks failed: " in err and "output0.scores: max abs" in err


def test_checkpoint_exports_and_matches_the_model_it_came_from(tmp_path: Path) -> None:
    import copy

    import yolov5_standin as y5
    from test_checkpoint import fork_cfg

    y5.install()
    try:
        standin = y5.randomize(y5.DetectionModel(fork_cfg("CA")))
        torch.save(y5.training_checkpoint(standin), tmp_path / "best.pt")
        code, _, err = cli("export", "--weights", str(tmp_path / "best.pt"), "--imgsz", "320", "-o", str(tmp_path / "best.onnx"))
        assert code == 0, err
        x = random_images(1, 320, 320, seed=3)
        got = OnnxrtRunner(tmp_path / "best.onnx").run({"images": x})["output0"]
        with torch.no_grad():
            want = copy.deepcopy(standin).half().float().eval()(torch.from_numpy(x))[0].numpy()
        np.testing.assert_allclose(got[..., :4], want[..., :4], atol=2e-3)
        np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=2e-5)
        assert json.loads((tmp_path / "best.json").read_text())["source"] == {"weights": str(tmp_path / "best.pt")}
    finally:
        y5.uninstall()
