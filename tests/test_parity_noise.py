"""Export parity judged against the model's own float32 noise (PyTorch float32 vs float64):
a correct graph of a model with large activations passes where a fixed 1e-3 px fails, and
a graph with one damaged weight fails by orders of magnitude, saying by how many."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from attn_deploy.exporter import ExportSpec
from attn_deploy.exporter.parity_check import check_export, measure_noise, random_images
from attn_deploy.exporter.torch2onnx import clean, onnx_metadata, torch_to_onnx
from attn_deploy.models import create_model, list_attention, load_model
from attn_deploy.models.yolo import DetectionModel
from attn_deploy.parity import Tolerances
from attn_deploy.parity.tensor import NOISE_FACTOR, Noise, TensorStats

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"
SPEC = ExportSpec((320, 320))


def plain_onnx(net: DetectionModel, spec: ExportSpec = SPEC) -> bytes:
    return clean(torch_to_onnx(net, spec), net.name, onnx_metadata(net, spec)).SerializeToString()


def recalibrated(name: str, size: int = 256) -> DetectionModel:
    """Random weights with BatchNorm statistics taken from random images, as training leaves
    them: activations keep their size through the depth (random init's fade to ~1e-5), so
    float32 error is the size a trained checkpoint's is."""
    net = create_model(name)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(random_images(2, size, size, 100)))
    return net.eval()


def damaged(plain: bytes, pick: Callable[[list[onnx.TensorProto]], onnx.TensorProto],
            index: tuple[int, ...], delta: float | None = None) -> bytes:
    """The graph with ``delta`` (default 8 max|w|, as tests/test_blocks.py) added at ``index``
    of the initializer ``pick`` chooses."""
    model = onnx.load_from_string(plain)
    init = pick(list(model.graph.initializer))
    w = numpy_helper.to_array(init).copy()
    w[index] += 8 * np.abs(w).max() if delta is None else delta
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return model.SerializeToString()


@pytest.fixture(scope="module")
def demo() -> tuple[DetectionModel, bytes]:
    net = load_model(None, None, str(DEMO))
    return net, plain_onnx(net)


@pytest.mark.parametrize("key", ["none", *list_attention()])
def test_every_attention_model_runs_in_float64_and_stays_float32(key: str) -> None:
    net = create_model("yolov5n" if key == "none" else f"yolov5n-{key}")
    noise = measure_noise(net, 96, 128)
    # boxes up to ~100 px: float32 steps of 8e-6 px; the network adds some, random init little
    assert 1e-6 < noise.box < 1e-3 and 0 < noise.score < 1e-6 and noise.case == (1, 3, 96, 128)
    assert all(p.dtype == torch.float32 for p in net.parameters()) and not net.training
    assert net.detect.anchors.dtype == torch.float32


def test_tolerance_is_the_noise_times_the_factor_above_the_floor() -> None:
    big = Noise(box=0.01, score=2e-5, case=(1, 3, 64, 64)).tolerances()
    assert big.box_atol == pytest.approx(0.01 * NOISE_FACTOR)
    assert big.score_atol == pytest.approx(2e-5 * NOISE_FACTOR)
    small = Noise(box=1e-6, score=1e-9).tolerances()
    assert small == Tolerances()  # never below the fixed floor
    plain = TensorStats("output0.boxes", 0.5, 1e-3, 1.0, 1e-3, 1e-5, 50.0)
    assert plain.failure() == "output0.boxes: max abs 0.5 px exceeds 0.001 + 1e-05*|ref| by 50x"


def test_large_activations_pass_where_a_fixed_tolerance_fails() -> None:
    net = recalibrated("yolov5s")
    plain = plain_onnx(net)
    result = check_export(net, plain, SPEC)
    assert result.passed, result.failures()
    boxes = {s.name: s for s in result.stats}["output0.boxes"]
    assert 1e-3 < result.noise.box < 0.1 and boxes.noise == result.noise.box
    assert boxes.max_abs < 4 * result.noise.box  # a second float32 runtime: noise-sized error
    old = check_export(net, plain, SPEC, tol=Tolerances())  # the fixed 1e-3 px + 1e-5 |ref|
    assert not old.passed and any(f.startswith("output0.boxes: max abs") for f in old.failures())


def test_a_damaged_head_fails_by_orders_of_magnitude_and_says_so(demo: tuple[DetectionModel, bytes]) -> None:
    net, plain = demo
    ok = check_export(net, plain, SPEC)
    assert ok.passed and max(s.noise_ratio for s in ok.stats) < NOISE_FACTOR / 4
    head = lambda inits: next(t for t in inits if re.fullmatch(r"model\.\d+\.m\.0\.weight", t.name))  # noqa: E731
    bad = check_export(net, damaged(plain, head, (15,), 0.5), SPEC)  # as tests/test_demo_parity.py
    assert not bad.passed
    (line,) = [f for f in bad.failures() if f.startswith("output0.scores")]
    ratio = float(re.search(r"is ([\d.e+]+)x the float32 noise of this model \(", line).group(1))
    allowed = float(re.search(r"; allowed ([\d.e+]+)x \(", line).group(1))  # the 1e-4 floor: 52x here
    assert ratio > 1e4 and NOISE_FACTOR <= allowed < ratio / 100
    doc = bad.to_dict()
    assert doc["noise"]["factor"] == NOISE_FACTOR and doc["outputs"]["output0.scores"]["noise_ratio"] > 1e4


def test_a_damaged_backbone_weight_fails(demo: tuple[DetectionModel, bytes]) -> None:
    net, plain = demo
    third_conv = lambda inits: [t for t in inits if len(t.dims) == 4][2]  # noqa: E731
    bad = check_export(net, damaged(plain, third_conv, (3, 0, 0, 0)), SPEC)
    assert not bad.passed
    boxes = {s.name: s for s in bad.stats}["output0.boxes"]
    assert boxes.noise_ratio > 100 * NOISE_FACTOR


def test_a_model_that_overflows_in_float32_fails_instead_of_passing_anything() -> None:
    net = create_model("yolov5n")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(100)
    spec = ExportSpec((64, 64))
    result = check_export(net, plain_onnx(net, spec), spec)
    assert not result.noise.sane() and not result.passed
    assert any(f.startswith("float32 noise: PyTorch float32 within 0.01 of float64") for f in result.failures())  # noqa: E501
