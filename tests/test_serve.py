"""``serve``: Triton model repositories from sidecars, checked field by field, and a real
``tritonserver`` (NVIDIA's pytriton wheel, python backend, on the CPU) serving them: the
ensemble's detections equal parity's, under concurrent requests with dynamic batching."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attn_deploy.cli import main
from attn_deploy.serve.config import Tensor, check_config, parse
from attn_deploy.serve.repository import ServeOptions, write_repository

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "yolov5n-ca-shapes.pt"
ENV = Path(os.environ.get("ATTN_DEPLOY_TRITON_ENV", ROOT / ".venv-triton"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo model at 320: dynamic batch, H, W; and static batch 1."""
    d = tmp_path_factory.mktemp("serve")
    out = {}
    for kind, extra in (("dynamic", ["--dynamic"]), ("static", [])):
        path = d / f"{kind}.onnx"
        r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "320", "--no-check", *extra, "-o", str(path)])
        assert r.exit_code == 0, r.stderr
        out[kind] = path
    return out


def _config(repo: Path, name: str) -> object:
    return parse((repo / name / "config.pbtxt").read_text())


def test_onnx_repository_agrees_with_the_graph(exported: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    result = write_repository(exported["dynamic"], ServeOptions(repo, name="det", max_batch=16, instances=2,
                                                               max_queue_delay_us=500))
    assert sorted(result.models) == ["det"]
    cfg = _config(repo, "det")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500 and cfg.instance_group[0].count == 2
    side = json.loads(exported["dynamic"].with_suffix(".json").read_text())
    nc = side["nc"]
    inputs = [Tensor("images", "float32", (3, -1, -1))]
    outputs = [Tensor("output0", "float32", (-1, 5 + nc))]
    assert check_config(cfg, inputs, outputs, 16) == []
    assert (repo / "det" / "1" / "model.onnx").read_bytes() == exported["dynamic"].read_bytes()
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_static_batch_serves_batch_one_only(exported: dict[str, Path], tmp_path: Path) -> None:
    write_repository(exported["static"], ServeOptions(tmp_path, name="s"))  # the default fits the graph
    cfg = _config(tmp_path, "s")
    assert cfg.max_batch_size == 1 and list(cfg.input[0].dims) == [3, 320, 320]
    r = CliRunner().invoke(main, ["serve", str(exported["static"]), "--repository", str(tmp_path / "r2"), "--max-batch", "4"])
    assert r.exit_code == 2 and "fixed batch of 1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _fake_engine(tmp_path: Path, onnx_path: Path, max_batch: int) -> Path:
    """An engine file (bytes TensorRT would have written) and its build sidecar, as build writes it."""
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"not really a plan")
    export = json.loads(onnx_path.with_suffix(".json").read_text())
    side = {"tensorrt": "10.15.0", "precision": "fp16", "export": export,
            "profiles": [{"input": "images", "min": [1, 3, 320, 320], "opt": [4, 3, 320, 320], "max": [max_batch, 3, 320, 320]}]}
    engine.with_name(engine.name + ".json").write_text(json.dumps(side))
    return engine


def test_engine_repository_follows_its_profile(exported: dict[str, Path], tmp_path: Path) -> None:
    engine = _fake_engine(tmp_path, exported["dynamic"], 8)
    repo = tmp_path / "repo"
    write_repository(engine, ServeOptions(repo, name="trt", max_batch=8, instances=3))
    cfg = _config(repo, "trt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 8 and cfg.instance_group[0].count == 3
    assert cfg.instance_group[0].kind == 1  # KIND_GPU
    assert list(cfg.input[0].dims) == [3, 320, 320]  # the profile fixes H, W (the ONNX left them dynamic)
    assert (repo / "trt" / "1" / "model.plan").read_bytes() == b"not really a plan"
    r = CliRunner().invoke(main, ["serve", str(engine), "--repository", str(repo), "--max-batch", "16"])
    assert r.exit_code == 2 and "--max-batch 16 is more than its profile serves 8" in r.stderr


def test_ensemble_configs(exported: dict[str, Path], tmp_path: Path) -> None:
    write_repository(exported["dynamic"], ServeOptions(tmp_path, name="det", ensemble=True, raw_input=True))
    e2e, pre, post = (_config(tmp_path, n) for n in ("det_e2e", "det_pre", "det_post"))
    assert e2e.platform == "ensemble" and [s.model_name for s in e2e.ensemble_scheduling.step] == ["det_pre", "det", "det_post"]
    assert list(e2e.input[0].dims) == [-1, -1, 3] and list(e2e.output[0].dims) == [-1, 6]
    assert pre.backend == "python" and pre.parameters["imgsz"].string_value == "320,320"
    assert list(pre.output[0].dims) == [3, 320, 320]
    assert json.loads(post.parameters["nms"].string_value) == {"topk": 100, "iou_thres": 0.45, "conf_thres": 0.25}
    assert "import Preprocess as TritonPythonModel" in (tmp_path / "det_pre" / "1" / "model.py").read_text()


BAD = [
    (["--name", "../x"], "is not one Triton takes"),
    (["--name", ".hidden"], "is not one Triton takes"),
    (["--max-batch", "0"], "--max-batch must be 1 to 4096"),
    (["--instances", "0"], "--instances must be 1 to 64"),
]
BAD_STATIC = [(["--imgsz", "640", "--ensemble"], "takes 320x320 images, not --imgsz 640,640")]


@pytest.mark.parametrize("kind,args,needle", [("dynamic", *b) for b in BAD] + [("static", *b) for b in BAD_STATIC],
                         ids=[" ".join(a) for a, _ in BAD + BAD_STATIC])
def test_bad_serve_input_is_one_line(exported: dict[str, Path], tmp_path: Path, kind: str, args: list[str],
                                     needle: str) -> None:
    r = CliRunner().invoke(main, ["serve", str(exported[kind]), "--repository", str(tmp_path / "r"), *args])
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unwritable_repository_and_missing_sidecar(exported: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = CliRunner().invoke(main, ["serve", str(exported["dynamic"]), "--repository", str(blocker / "repo")])
    assert r.exit_code == 2 and "cannot write the repository" in r.stderr
    bare = tmp_path / "bare.onnx"
    shutil.copy(exported["dynamic"], bare)
    r = CliRunner().invoke(main, ["serve", str(bare), "--repository", str(tmp_path / "r")])
    assert r.exit_code == 2 and "has no export sidecar" in r.stderr


def test_a_server_that_is_not_there(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["bench", "det", "--triton", "127.0.0.1:9", "--iterations", "1"])
    assert r.exit_code == 2 and "no Triton server answers at 127.0.0.1:9" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---- a real tritonserver -------------------------------------------------------------------


def _server_reason() -> str | None:
    from attn_deploy.serve.local import pytriton_root

    if pytriton_root() is None:
        return ("needs NVIDIA's nvidia-pytriton wheel (its tritonserver binary): "
                "pip install --no-deps nvidia-pytriton==0.7.0, as tests/run.sh does")
    if not (ENV / "bin" / "python").is_file():
        return (f"needs the python backend's execution environment at {ENV} "
                "(tests/run.sh makes it; ATTN_DEPLOY_TRITON_ENV names another)")
    return None


@pytest.fixture(scope="module")
def server(exported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reason = _server_reason()
    if reason:
        pytest.skip(reason)
    from attn_deploy.serve.local import LocalTriton

    repo = tmp_path_factory.mktemp("triton") / "repo"
    r = CliRunner().invoke(main, ["serve", str(exported["dynamic"]), "--repository", str(repo), "--name", "det",
                                  "--ensemble", "--backend", "python", "--python-env", str(ENV), "--max-batch", "8",
                                  "--max-queue-delay-us", "50000"])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(main, ["serve", str(exported["dynamic"]), "--repository", str(repo), "--name", "raw",
                                  "--ensemble", "--raw-input", "--backend", "python", "--python-env", str(ENV)])
    assert r.exit_code == 0, r.stderr
    with LocalTriton(repo) as s:
        yield s


def _expected(onnx_path: Path, files: list[Path]) -> list[np.ndarray]:
    """parity's detections of the same ONNX: its loader, runner and postprocess."""
    from attn_deploy.data.letterbox import letterbox
    from attn_deploy.data.loader import read_image, to_input
    from attn_deploy.engines import runner_for
    from attn_deploy.parity.postprocess import SHIP_NMS, postprocess

    out = []
    with runner_for(onnx_path) as runner:
        for f in files:
            image, placed = letterbox(read_image(f), (320, 320))
            [d] = postprocess(runner.run({"images": to_input(image)[None]})["output0"], [placed], SHIP_NMS)
            out.append(np.concatenate((d.boxes, d.scores[:, None], d.classes[:, None]), 1))
    return out


@pytest.fixture(scope="module")
def val_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from attn_deploy.train.shapes import write_dataset

    root = write_dataset(tmp_path_factory.mktemp("serve-data") / "shapes", train=1, val=12)
    return sorted((root.parent / "images" / "val").iterdir())


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, :4], want[:, :4], rtol=0, atol=1e-3)  # pixels
    np.testing.assert_allclose(got[:, 4], want[:, 4], rtol=0, atol=1e-5)
    assert (got[:, 5] == want[:, 5]).all()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_detections_equal_parity(server, exported: dict[str, Path], val_images: list[Path], protocol: str) -> None:  # type: ignore[no-untyped-def]
    from attn_deploy.serve.client import connect, detect

    client = connect(server.http if protocol == "http" else server.grpc, protocol)
    want = _expected(exported["dynamic"], val_images[:6])
    assert sum(len(w) for w in want) > 0  # a comparison of nothing proves nothing
    for f, w in zip(val_images[:6], want):
        _same(detect(client, "det_e2e", f.read_bytes(), protocol), w)


@pytest.mark.slow
def test_raw_bgr_images_give_the_same_detections(server, exported: dict[str, Path], val_images: list[Path]) -> None:  # type: ignore[no-untyped-def]
    from attn_deploy.data.loader import read_image
    from attn_deploy.serve.client import connect, detect

    client = connect(server.http)
    for f, w in zip(val_images[:3], _expected(exported["dynamic"], val_images[:3])):
        _same(detect(client, "raw_e2e", read_image(f)), w)


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_each_answered_right(server, exported: dict[str, Path], val_images: list[Path]) -> None:  # type: ignore[no-untyped-def]
    from attn_deploy.serve.client import connect, detect

    want = _expected(exported["dynamic"], val_images)

    def one(i: int) -> tuple[int, np.ndarray]:
        return i, detect(connect(server.grpc, "grpc"), "det_e2e", val_images[i].read_bytes(), "grpc")

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = dict(pool.map(one, [i % len(val_images) for i in range(36)]))
    assert sorted(answers) == list(range(len(val_images)))
    for i, got in answers.items():  # nothing lost, nothing swapped between requests
        _same(got, want[i])
    stats = connect(server.http).get_inference_statistics("det")["model_stats"][0]
    sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    assert max(sizes) > 1, sizes  # dynamic batching formed batches of several requests
    assert int(stats["inference_stats"]["success"]["count"]) >= 36


@pytest.mark.slow
def test_metrics_endpoint_and_bench_against_the_server(server) -> None:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10) as r:  # noqa: S310
        text = r.read().decode()
    assert 'nv_inference_request_success{model="det_e2e"' in text
    r = CliRunner().invoke(main, ["bench", "det_e2e", "--triton", server.http, "--concurrency", "4",
                                  "--iterations", "12", "--warmup", "0.2", "--imgsz", "320", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["iterations"] >= 12 and doc["throughput"] > 0 and doc["concurrency"] == 4
    assert doc["latency_ms"]["p99"] >= doc["latency_ms"]["median"] > 0


def test_bad_image_fails_its_request_only(server) -> None:  # type: ignore[no-untyped-def]
    from attn_deploy.serve.client import connect, detect

    client = connect(server.http)
    with pytest.raises(Exception, match="not a decodable image"):
        detect(client, "det_e2e", b"not an image")
    assert client.is_server_ready()


@pytest.mark.slow
def test_the_client_example_prints_the_detections(server, exported: dict[str, Path], val_images: list[Path]) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    want = _expected(exported["dynamic"], val_images[:2])
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "triton_client.py"), server.grpc, "det_e2e",
                          *map(str, val_images[:2]), "--grpc"], capture_output=True, text=True, check=True).stdout
    for f, w in zip(val_images[:2], want):
        assert f"{f}: {len(w)} detection(s)" in out
    assert out.count("  class ") == sum(len(w) for w in want)
