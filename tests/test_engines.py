"""Runners, the build policy and its refusals, bench statistics and the bench CLI, on the CPU;
the TensorRT and CUDA paths are marked and skip where those are absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from attn_deploy.cli import main
from attn_deploy.engines import OnnxrtRunner, TorchRunner, runner_for
from attn_deploy.engines.bench import BenchOptions, LatencyStats, Timing, compare
from attn_deploy.engines.build import BuildOptions, build_engine, input_profile, onnx_precision, parse_shape, plan_build
from attn_deploy.engines.trt import GpuInfo, check_compatible, tensorrt_version
from attn_deploy.errors import UserError
from attn_deploy.exporter.export import export_model
from attn_deploy.exporter.torch2onnx import ExportSpec, torch_to_onnx
from attn_deploy.models.zoo import create_model

NO_TRT = tensorrt_version() is None


@pytest.fixture(scope="module")
def small() -> tuple[object, bytes]:
    net = create_model("yolov5n-ca", nc=3)
    return net, torch_to_onnx(net, ExportSpec((128, 160), 2))


def test_torch_and_onnxruntime_runners_agree_on_one_feed(small) -> None:
    net, data = small
    feed = {"images": np.random.default_rng(0).random((2, 3, 128, 160), dtype=np.float32)}
    with TorchRunner(net) as a, OnnxrtRunner(data) as b:
        ra, rb = a.run(feed), b.run(feed)
        assert a.output_names() == b.output_names() == ["output0"]
        assert b.inputs()[0].shape == (2, 3, 128, 160) and b.inputs()[0].dtype == "float32"
    np.testing.assert_allclose(ra["output0"], rb["output0"], atol=2e-3, rtol=1e-5)
    with pytest.raises(UserError, match="lacks input"):
        OnnxrtRunner(data).run({"x": feed["images"]})


def test_latency_statistics_from_known_timings() -> None:
    s = LatencyStats.from_ms(list(range(100, 0, -1)))  # 1..100 ms, in any order
    assert (s.min, s.max, s.mean) == (1, 100, 50.5)
    assert (s.median, s.p90, s.p95, s.p99) == (50, 90, 95, 99)  # nearest rank, as trtexec
    odd = LatencyStats.from_ms([3.0, 1.0, 2.0, 10.0, 4.0])
    assert (odd.median, odd.p90, odd.p99) == (3.0, 10.0, 10.0)


class Fake:
    """A workload whose step durations are given: what compare() does with them is checked."""

    def __init__(self, label: str, ms: float, log: list[str]) -> None:
        self.label, self.backend, self.precision, self.batch, self.imgsz, self.device = label, "fake", "fp32", 4, (8, 8), "test"
        self.ms, self.log = ms, log

    def setup(self) -> None:
        self.log.append(f"setup {self.label}")

    def step(self) -> Timing:
        self.log.append(self.label)
        return Timing(self.ms, 0.1, self.ms - 0.2, 0.1)

    def close(self) -> None:
        self.log.append(f"close {self.label}")


def test_compare_interleaves_rotates_and_counts() -> None:
    log: list[str] = []
    a, b = Fake("a", 10.0, log), Fake("b", 5.0, log)
    ra, rb = compare([a, b], BenchOptions(warmup_s=0, iterations=4), chunk=2)
    steps = [x for x in log if x in ("a", "b")][2:]  # after one warm-up step each
    assert steps == ["a", "a", "b", "b", "b", "b", "a", "a"]  # the second round starts with b
    assert ra.iterations == rb.iterations == 4 and log[-1] == "close b"
    assert ra.throughput == pytest.approx(4 * 1000 / 10) and rb.throughput / ra.throughput == pytest.approx(2)
    d = rb.to_dict()
    assert d["latency_ms"]["median"] == 5.0 and d["compute_ms"]["max"] == 4.8 and d["backend"] == "fake"


def test_bench_json_on_pytorch_and_onnxruntime(tmp_path: Path, small) -> None:
    _, data = small
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(data)
    for args in (["yolov5n-ca", "--imgsz", "128"], [str(onnx_file)]):
        r = CliRunner().invoke(main, ["bench", *args, "--batch", "2", "--iterations", "3", "--warmup", "0", "--json"])
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert {"backend", "batch", "throughput", "latency_ms", "device"} <= set(doc) and doc["batch"] == 2
        lat = doc["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert doc["throughput"] == pytest.approx(2000 / lat["mean"], rel=1e-3, abs=0.006)  # both rounded
    assert json.loads(r.stdout)["backend"] == "ort" and json.loads(r.stdout)["imgsz"] == [128, 160]


def test_bench_compare_writes_json_and_png(tmp_path: Path, small) -> None:
    _, data = small
    (tmp_path / "m.onnx").write_bytes(data)
    out = tmp_path / "cmp"
    r = CliRunner().invoke(main, ["bench", "--compare", "yolov5n-ca@torch", str(tmp_path / "m.onnx"), "--batch", "2",
                                  "--imgsz", "128,160", "--iterations", "3", "--warmup", "0", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    saved = json.loads(out.with_suffix(".json").read_text())["results"]
    assert [x["backend"] for x in saved] == ["torch", "ort"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refusals_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["yolov5n", "--precision", "fp16", "--iterations", "1"], "GPU settings"),
        (["a.onnx", "b.onnx"], "need --compare"),
        (["yolov5n", "--backend", "trt"], "'attn-deploy build' first"),
        (["missing.engine"], "engine not found"),
    ]
    for args, words in cases:
        r = CliRunner().invoke(main, ["bench", *args])
        assert r.exit_code == 2 and words in r.stderr, (args, r.stderr)


def qdq_and_fp16_graphs() -> tuple[onnx.ModelProto, onnx.ModelProto, onnx.ModelProto]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = helper.make_model(helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "g", [x], [y], [s, z]))
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT16, [1, 4])
    half = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)],
        "g", [x], [y], value_info=[h]))
    return plain, qdq, half


def test_the_precision_an_onnx_carries() -> None:
    plain, qdq, half = qdq_and_fp16_graphs()
    assert [onnx_precision(m) for m in (plain, qdq, half)] == ["fp32", "int8", "fp16"]


def test_build_policy() -> None:
    assert plan_build("int8", "fp32", 10).strongly_typed and plan_build("fp16", "fp16", 11).strongly_typed
    old = plan_build("int8", "best", 8)
    assert not old.strongly_typed and old.int8 and old.fp16  # 8.x has no strongly typed networks
    assert plan_build("fp32", "fp16", 10).fp16 and not plan_build("fp32", "fp32", 10).fp16
    with pytest.raises(UserError, match="attn-deploy calib m.onnx --precision fp16"):
        plan_build("fp32", "fp16", 11, "m.onnx")  # TensorRT 11 has no FP16 flag
    with pytest.raises(UserError, match="needs calibration"):
        plan_build("fp32", "int8", 10)
    implicit = plan_build("fp32", "int8", 10, cache=True)
    assert implicit.int8 and not implicit.fp16 and not implicit.strongly_typed


def test_profiles_for_dynamic_inputs() -> None:
    net = create_model("yolov5n", nc=2)
    dyn = onnx.load_from_string(torch_to_onnx(net, ExportSpec((64, 64), 1, dynamic=True)))
    static = onnx.load_from_string(torch_to_onnx(net, ExportSpec((64, 64), 1)))
    shapes = tuple(parse_shape(s) for s in ("1x3x320x320", "4x3x640x640", "8x3x640x640"))
    assert input_profile(dyn, shapes, None) == ("images", shapes)
    assert input_profile(dyn, None, {"imgsz": [480, 640]}) == ("images", ((1, 3, 480, 640),) * 3)
    assert input_profile(static, None, None) is None
    with pytest.raises(UserError, match="min <= opt <= max"):
        input_profile(dyn, (shapes[2], shapes[1], shapes[0]), None)
    with pytest.raises(UserError, match="give --min-shape"):
        input_profile(dyn, None, None)
    with pytest.raises(UserError, match="static"):
        input_profile(static, shapes, None)
    with pytest.raises(UserError, match="not a shape"):
        parse_shape("1,3,640,640")


def test_engine_from_another_tensorrt_or_gpu_is_refused() -> None:
    side = {"tensorrt": "10.15.1", "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}}
    h100, orin = GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), GpuInfo("Orin", "8.7")
    check_compatible(side, "10.15.1", h100, "m.engine")  # same machine kind: fine
    with pytest.raises(UserError, match="built with TensorRT 10.15.1, this machine has 10.3.0"):
        check_compatible(side, "10.3.0", orin, "m.engine")
    with pytest.raises(UserError, match="compute capability 9.0 .* this GPU is 8.7"):
        check_compatible(side, "10.15.1", orin, "m.engine")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        check_compatible(side, "10.15.1", None, "m.engine")
    check_compatible({**side, "version_compatible": True}, "10.16.0", h100, "m.engine")


@pytest.mark.skipif(not NO_TRT, reason="TensorRT is installed here: the no-TensorRT path does not apply")
def test_build_without_tensorrt_is_one_line_and_no_file(tmp_path: Path, small) -> None:
    _, data = small
    src = tmp_path / "m.onnx"
    src.write_bytes(data)
    r = CliRunner().invoke(main, ["build", str(src), "-o", str(tmp_path / "m.engine")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "TensorRT is not installed" in r.stderr and "pypi.nvidia.com" in r.stderr and "JetPack" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    (tmp_path / "x.engine").write_bytes(b"\0" * 16)
    assert CliRunner().invoke(main, ["parity", "--model", "yolov5n-ca", "--against", str(tmp_path / "x.engine")]).exit_code == 2


def test_bad_onnx_is_refused_before_tensorrt(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not an ONNX model"):
        build_engine(tmp_path / "bad.onnx", None, BuildOptions())


@pytest.mark.needs_trt
@pytest.mark.needs_cuda
def test_engine_builds_runs_and_passes_parity(tmp_path: Path) -> None:
    net = create_model("yolov5n-ca", nc=3)
    src = tmp_path / "m.onnx"
    export_model(net, src, ExportSpec((256, 256)), check=False)  # this very net, not the CLI's 80-class one
    result = build_engine(src, tmp_path / "m.engine", BuildOptions("fp32"))
    assert result.sidecar["tensorrt"] == tensorrt_version() and (tmp_path / "m.engine.json").is_file()
    feeds = [{"images": np.random.default_rng(k).random((1, 3, 256, 256), dtype=np.float32)} for k in range(2)]
    with runner_for(tmp_path / "m.engine") as trt_run:
        assert trt_run.output_names() == ["output0"] and trt_run.inputs()[0].shape == (1, 3, 256, 256)
        got = [trt_run.run(f)["output0"] for f in feeds]  # kept across runs: copies, not reused buffers
    for feed, out in zip(feeds, got):
        want = TorchRunner(net).run(feed)["output0"]
        assert out.shape == want.shape == (1, 3 * (8 * 8 + 16 * 16 + 32 * 32), 8)
        np.testing.assert_allclose(out[..., :4], want[..., :4], atol=0.05)
        np.testing.assert_allclose(out[..., 4:], want[..., 4:], atol=1e-3)
    assert not np.array_equal(got[0], got[1])


@pytest.mark.needs_cuda
def test_bench_on_cuda_splits_copies_from_compute() -> None:
    r = CliRunner().invoke(main, ["bench", "yolov5n-ca", "--imgsz", "320", "--iterations", "20", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    for part in ("h2d_ms", "compute_ms", "d2h_ms"):
        assert 0 < doc[part]["median"] < doc["latency_ms"]["max"]
    assert doc["latency_ms"]["median"] == pytest.approx(
        doc["h2d_ms"]["median"] + doc["compute_ms"]["median"] + doc["d2h_ms"]["median"], rel=0.25)
