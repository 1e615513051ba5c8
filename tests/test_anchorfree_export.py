"""The anchor-free family after the model: zoo variants, export (static, dynamic, --nms,
YOLO26's end-to-end top-k), the sidecar's head description, post-processing of each layout,
per-layer attention flags and INT8 Q/DQ on every family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from attn_deploy import layouts
from attn_deploy.calib.groups import candidate_groups
from attn_deploy.calib.int8 import quantize_int8
from attn_deploy.cli import main
from attn_deploy.data.letterbox import Letterbox
from attn_deploy.engines import OnnxrtRunner
from attn_deploy.errors import UserError
from attn_deploy.exporter import ExportSpec, NmsOptions, export_model, lint_onnx
from attn_deploy.exporter.export import layer_table
from attn_deploy.exporter.layers import find_boundaries, model_rows
from attn_deploy.exporter.parity_check import random_images
from attn_deploy.exporter.torch2onnx import torch_to_onnx
from attn_deploy.models.attention import get_attention, list_attention
from attn_deploy.models.heads import head_of, match_sidecar, set_end2end
from attn_deploy.models.zoo import create_model, model_names
from attn_deploy.parity.nms import multiclass_nms
from attn_deploy.parity.postprocess import SHIP_NMS, postprocess
from attn_deploy.parity.tensor import compare

FAMILIES = ("yolov8", "yolo11", "yolo12", "yolo26")
# rows holding self-attention in each family's n model (the -KEY variants shift them by one)
OWN_ATTENTION = {"yolov8": [], "yolo11": [10], "yolo12": [6, 8], "yolo26": [10, 22]}


def lively(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised detector scores every anchor alike (its activations shrink layer
    by layer to nothing), which leaves NMS and top-k only ties to choose between. BatchNorm
    gains of 2 keep the activations alive, larger last-layer weights make boxes and scores
    differ from anchor to anchor, and spread class biases put some scores above the thresholds."""
    g = torch.Generator().manual_seed(seed)
    det = net.detect
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(2.0)
        for box, cls in [(det.cv2, det.cv3)] + ([(det.one2one_cv2, det.one2one_cv3)] if det.end2end else []):
            for seq in (*box, *cls):
                seq[-1].weight.mul_(10)
            for seq in cls:
                seq[-1].bias.copy_(torch.randn(seq[-1].bias.shape, generator=g) * 2)
    return net


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_variant_adds_exactly_the_block_as_layer_9(family: str) -> None:
    with torch.device("meta"):
        base, ca = create_model(f"{family}n"), create_model(f"{family}n-ca")
    c = 256  # the backbone's last stage at n: min(1024, max_channels) x 0.25
    with torch.device("meta"):
        block = sum(p.numel() for p in get_attention("ca").cls(c).parameters())
    assert sum(p.numel() for p in ca.parameters()) - sum(p.numel() for p in base.parameters()) == block
    assert ca.rows[9].name == "ca" and [r.name for r in ca.rows[10:]] == [r.name for r in base.rows[9:]]
    assert ca.detect.f == [j + 1 for j in base.detect.f]


def test_names_by_family() -> None:
    assert len(model_names()) == 5 * (5 + 5 * len(list_attention()))
    assert model_names("yolo26")[:5] == ["yolo26n", "yolo26s", "yolo26m", "yolo26l", "yolo26x"]
    with pytest.raises(UserError, match="did you mean yolo11n"):
        create_model("yolo11nn")


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n-cbam", "yolo12n", "yolo26n"])
def test_export_is_clean_checked_and_in_ultralytics_layout(tmp_path: Path, name: str) -> None:
    net = create_model(name)
    path = tmp_path / "m.onnx"
    r = export_model(net, path, ExportSpec((128, 160), batch=2, opset=17))
    assert r.passed, r.failures()
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {n.domain for n in proto.graph.node} <= {""} and "Attention" not in ops and lint_onnx(proto).passed
    anchors = sum((128 // s) * (160 // s) for s in (8, 16, 32))
    out = proto.graph.output[0]
    assert out.name == "output0" and [d.dim_value for d in out.type.tensor_type.shape.dim] == [2, 84, anchors]
    side = json.loads(path.with_suffix(".json").read_text())
    family = name[:6]
    assert side["family"] == family and side["output_layout"] == layouts.ANCHOR_FREE and side["anchors"] is None
    assert side["head"]["kind"] == "anchor-free" and side["head"]["reg_max"] == (1 if family == "yolo26" else 16)
    flagged = [row["index"] for row in side["layers"] if row["attention"]]
    shift = 1 if name.endswith("-cbam") else 0
    assert flagged == ([9] if shift else []) + [i + shift for i in OWN_ATTENTION[family]]
    if flagged:  # self-attention as plain matrix products, which TensorRT's parser takes at opset 13-20
        assert {"MatMul", "Softmax"} <= ops or family == "yolov8"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "detect" and meta["stride"] == "32" and meta["end2end"] == "False"


def test_dynamic_export_runs_at_other_sizes_and_batches(tmp_path: Path) -> None:
    net = create_model("yolo11n")
    r = export_model(net, tmp_path / "d.onnx", ExportSpec((128, 128), batch=1, dynamic=True))
    assert r.passed and [1, 3, 96, 160] in r.parity.cases and [2, 3, 96, 160] in r.parity.cases
    side = json.loads((tmp_path / "d.json").read_text())
    assert side["dynamic_axes"]["output0"] == {"0": "batch", "2": "boxes"}


def test_nms_graph_matches_numpy_nms_on_the_anchor_free_output(tmp_path: Path) -> None:
    net = lively(create_model("yolov8n", nc=3))
    r = export_model(net, tmp_path / "e2e.onnx", ExportSpec((128, 128), batch=2), nms=NmsOptions(topk=50))
    assert r.passed and r.parity.checks["nms: same detections and classes"]
    x = random_images(2, 128, 128, 5)
    got = OnnxrtRunner(tmp_path / "e2e.onnx").run({"images": x})
    with torch.no_grad():
        raw = net(torch.from_numpy(x)).numpy()
    for i in range(2):
        want = multiclass_nms(layouts.as_rows(raw, layouts.ANCHOR_FREE)[i], 0.45, 0.25, 50)
        n = int(got["num_dets"][i, 0])
        assert n == len(want) > 10
        key = lambda b, c, s: np.lexsort((b[:, 1].round(2), b[:, 0].round(2), c, -s.round(5)))  # noqa: E731
        order, mine = key(want.boxes, want.classes, want.scores), key(
            got["det_boxes"][i, :n], got["det_classes"][i, :n], got["det_scores"][i, :n])
        np.testing.assert_allclose(got["det_scores"][i, :n][mine], want.scores[order], atol=1e-5)
        np.testing.assert_allclose(got["det_boxes"][i, :n][mine], want.boxes[order], atol=1e-2)
        assert (got["det_classes"][i, :n][mine] == want.classes[order]).all()


def two_stage_topk(decoded: np.ndarray, k: int) -> np.ndarray:
    """The one-to-one head's reading, written plainly: the k anchors with the best class score,
    then the k best (anchor, class) pairs among them; xywh -> corners."""
    out = []
    for img in decoded:  # (4 + nc, A)
        boxes, scores = img[:4].T, img[4:].T
        top = np.argsort(-scores.max(1), kind="stable")[:k]
        pairs = [(scores[a, c], a, c) for a in top for c in range(scores.shape[1])]
        pairs.sort(key=lambda t: -t[0])
        rows = []
        for s, a, c in pairs[:k]:
            (x, y, w, h) = boxes[a]
            rows.append([x - w / 2, y - h / 2, x + w / 2, y + h / 2, s, c])
        out.append(rows)
    return np.asarray(out, np.float32)


def test_end_to_end_head_is_the_two_stage_topk_of_the_one_to_one_branch(tmp_path: Path) -> None:
    net = lively(create_model("yolo26n", nc=3))
    x = torch.from_numpy(random_images(2, 160, 192, 1))
    with torch.no_grad():
        net.detect.use_one2one = True
        decoded = net(x).numpy()
        net.detect.use_one2one = False
        set_end2end(net, 40)
        got = net(x).numpy()
    assert got.shape == (2, 40, 6) and head_of(net).layout == layouts.END2END
    want = two_stage_topk(decoded, 40)
    np.testing.assert_allclose(got[..., 4], want[..., 4], atol=1e-6)  # the same ranking
    for g, w in zip(got, want):  # equal scores come in either order, and tie at the cut: above it, as sets
        g, w = g[g[:, 4] > w[-1, 4] + 1e-6], w[w[:, 4] > w[-1, 4] + 1e-6]
        order = lambda r: np.lexsort((r[:, 1].round(2), r[:, 0].round(2), r[:, 5], -r[:, 4].round(5)))  # noqa: E731
        assert len(g) == len(w) > 20
        np.testing.assert_allclose(g[order(g)], w[order(w)], atol=1e-3)

    r = export_model(net, tmp_path / "nf.onnx", ExportSpec((160, 192), batch=2, dynamic=True))
    assert r.passed and r.parity.checks["end-to-end top-k: same detections and classes"]
    side = json.loads((tmp_path / "nf.json").read_text())
    assert side["output_layout"] == layouts.END2END and side["head"]["max_det"] == 40
    assert side["outputs"][0]["shape"] == ["batch", 40, 6]
    ours = OnnxrtRunner(tmp_path / "nf.onnx").run({"images": x.numpy()})["output0"]
    np.testing.assert_allclose(ours[..., 4], got[..., 4], atol=1e-5)
    fresh = match_sidecar(create_model("yolo26n", nc=3), side)  # what parity does with the sidecar
    assert fresh.detect.max_det == 40


def test_end_to_end_refusals() -> None:
    with pytest.raises(UserError, match="no one-to-one head"):
        set_end2end(create_model("yolo11n"))
    net = set_end2end(create_model("yolo26n"))
    with pytest.raises(UserError, match="no NMS"):
        export_model(net, None, ExportSpec((320, 320)), nms=NmsOptions())
    with pytest.raises(UserError, match="fewer than --max-det 300"):
        export_model(net, None, ExportSpec((96, 96)))


def test_postprocess_reads_every_layout() -> None:
    rng = np.random.default_rng(0)
    af = rng.random((1, 4 + 3, 50), dtype=np.float32) * np.array([100, 100, 30, 30, 1, 1, 1], np.float32)[None, :, None]
    place = [Letterbox((100, 100), 1.0, (0.0, 0.0))]
    a = postprocess(af, place, SHIP_NMS, layouts.ANCHOR_FREE)[0]
    rows = np.concatenate([af[0, :4].T, np.ones((50, 1), np.float32), af[0, 4:].T], 1)[None]
    b = postprocess(rows, place, SHIP_NMS, layouts.YOLOV5)[0]
    assert len(a) > 0 and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.classes, b.classes)
    e2e = np.array([[[0, 0, 10, 10, 0.9, 2], [5, 5, 9, 9, 0.2, 1], [1, 1, 4, 4, 0.5, 0]]], np.float32)
    d = postprocess(e2e, place, SHIP_NMS, layouts.END2END)[0]
    assert d.scores.tolist() == pytest.approx([0.9, 0.5]) and d.classes.tolist() == [2, 0]  # no NMS, ranked


def test_calib_candidate_groups_include_the_families_own_attention() -> None:
    net = create_model("yolo11n-se", nc=3)
    model = onnx.load_from_string(torch_to_onnx(net, ExportSpec((64, 64), 1)))
    groups = candidate_groups(model, layer_table(net, model))
    assert [g.name for g in groups] == ["model.0 Conv", "model.9 SqueezeExcite", "model.11 C2PSA", "model.24 Detect"]


@pytest.mark.parametrize("name", ["yolov8n-cbam", "yolo11n", "yolo12n", "yolo26n-ca"])
def test_int8_qdq_is_clean_runnable_and_keeps_the_boundaries(tmp_path: Path, name: str) -> None:
    net = create_model(name, nc=3)
    src = tmp_path / "m.onnx"
    src.write_bytes(torch_to_onnx(net, ExportSpec((96, 96), 1)))
    images = np.random.default_rng(0).random((4, 3, 96, 96), dtype=np.float32)
    q = onnx.load_from_string(quantize_int8(src, images, "max"))
    onnx.checker.check_model(q)
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 50
    assert all(n.domain in ("", "ai.onnx") for n in q.graph.node) and lint_onnx(q).passed
    feed = {"images": images[:1]}
    got, want = OnnxrtRunner(q.SerializeToString()).run(feed)["output0"], OnnxrtRunner(src).run(feed)["output0"]
    assert got.shape == want.shape and np.isfinite(got).all()
    assert compare("boxes", want[:, :4], got[:, :4], 0, 0).cosine > 0.99
    rows = model_rows(net)
    assert find_boundaries(q, rows) == find_boundaries(onnx.load(src), rows)


def test_cli_models_info_and_end2end_export(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["models", "--json"])
    doc = json.loads(r.stdout)
    assert set(doc["families"]) == {"yolov5", *FAMILIES} and "yolo12x-simam" in doc["families"]["yolo12"]
    r = CliRunner().invoke(main, ["info", "--model", "yolo26n", "--imgsz", "128", "--json"])
    doc = json.loads(r.stdout)
    assert doc["family"] == "yolo26" and doc["head"]["end2end"] and doc["params"] == 2_572_280
    out = tmp_path / "y26.onnx"
    r = CliRunner().invoke(main, ["export", "--model", "yolo26n", "--imgsz", "320", "--end2end", "--max-det", "100",
                                  "-o", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["passed"] and doc["head"]["layout"] == layouts.END2END
    # parity reads the head from the sidecar; the seeded model's features die out before its head
    # (every score 0.5, tied), so it detects nothing: an agreement of 1.0 from nothing is refused
    p = CliRunner().invoke(main, ["parity", "--model", "yolo26n", "--against", str(out), "--max-images", "2", "--json"])
    assert p.exit_code == 2 and p.stdout == "", p.stderr
    assert "no detections on either side of 2 images: the detection gates compared nothing" in p.stderr
    r = CliRunner().invoke(main, ["export", "--model", "yolov8n", "--end2end", "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "one-to-one" in r.stderr
    assert not (tmp_path / "x.onnx").exists()
