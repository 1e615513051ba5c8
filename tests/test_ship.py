"""``ship`` and the Python API: weights to a checked deployable in one folder, the documentation's
Python example as written, a failed gate that stops the run, bad input refused before any
work. The demo checkpoint on 8 generated shapes images (real mAP); TensorRT's path with its
markers, and its orchestration on the CPU with the build and the engine runner stood in for."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import attn_deploy
from attn_deploy.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "yolov5n-ca-shapes.pt"
NAME = "yolov5n-ca-shapes"
NO_TRT = "attn-deploy: TensorRT is not installed: ship stops at the checked ONNX"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attn_deploy.train.shapes import write_dataset

    return write_dataset(tmp_path_factory.mktemp("ship") / "shapes", train=8, val=8)


@pytest.fixture
def no_trt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path this project's machines take, on any machine."""
    monkeypatch.setattr("attn_deploy.engines.trt.tensorrt_version", lambda: None)


def ship(*args: str) -> Any:
    return CliRunner().invoke(main, ["ship", *args])


def summary(folder: Path) -> dict[str, Any]:
    doc = json.loads((folder / "ship.json").read_text())
    doc["status"] = {s["name"]: s["status"] for s in doc["steps"]}
    return doc


def test_fp32_without_tensorrt_stops_at_the_checked_onnx(shapes: Path, tmp_path: Path, no_trt: None) -> None:
    out = tmp_path / "fp32"
    r = ship("--weights", str(DEMO), "--data", str(shapes), "--precision", "fp32", "--imgsz", "320",
             "--max-images", "4", "-o", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip() == f"{NO_TRT} {out / NAME}.onnx (parity by ONNX Runtime)"
    files = {p.name for p in out.iterdir()}
    assert files == {f"{NAME}.onnx", f"{NAME}.json", "report.html", "report.json", "ship.json"}
    doc = summary(out)
    assert json.loads(r.stdout)["steps"] == doc["steps"]
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "skipped", "build": "skipped", "parity": "pass", "report": "pass"}
    assert doc["passed"] and doc["exit_code"] == 0 and doc["failed"] is None and doc["deployable"] == f"{NAME}.onnx"
    assert set(doc["artefacts"]) == files - {"ship.json"}
    assert json.loads((out / f"{NAME}.json").read_text())["parity"]["passed"]  # export's sidecar, kept
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["images"] == 4 and report["parity"]["detections"]["agreement"] == 1.0


def test_int8_without_tensorrt_ships_the_qdq_graph(shapes: Path, tmp_path: Path, no_trt: None) -> None:
    out = tmp_path / "int8"
    # everything in INT8 (no exclusion search: seconds, not minutes); on 8 images it agrees
    # with PyTorch at 0.73, so the agreement gate is lowered to what this test is about
    r = ship("--weights", str(DEMO), "--data", str(shapes), "--precision", "int8", "--imgsz", "320", "--exclude", "none",
             "--calib-images", "8", "--max-images", "4", "--min-agreement", "0.5", "--max-map-drop", "5", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert r.stderr.strip() == f"{NO_TRT} {out / NAME}.int8.onnx (parity by ONNX Runtime)"
    assert "PASS" in r.stdout and "int8.onnx is the deployable" in r.stdout
    files = {p.name for p in out.iterdir()}
    assert files == {f"{NAME}.onnx", f"{NAME}.json", f"{NAME}.int8.onnx", f"{NAME}.int8.json", "report.html",
                     "report.json", "ship.json"}
    doc = summary(out)
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "pass", "build": "skipped", "parity": "pass", "report": "pass"}
    assert doc["deployable"] == f"{NAME}.int8.onnx"
    side = json.loads((out / f"{NAME}.int8.json").read_text())  # calib's sidecar, kept
    assert side["precision"]["precision"] == "int8" and side["precision"]["calibration"]["images"] == 8
    report = json.loads((out / "report.json").read_text())
    assert report["calib"]["excluded_groups"] == [] and report["parity"]["candidate"] == f"{NAME}.int8.onnx"


def test_a_failed_gate_stops_the_run_with_exit_1(shapes: Path, tmp_path: Path, no_trt: None) -> None:
    out = tmp_path / "stopped"
    r = ship("--weights", str(DEMO), "--data", str(shapes), "--precision", "int8", "--imgsz", "320", "--exclude", "none",
             "--calib-images", "8", "--max-map-drop", "0", "-o", str(out))
    assert r.exit_code == 1, r.stderr
    assert re.search(r"^attn-deploy: ship stopped at calib: damage \d+\.\d+ > budget 0$", r.stderr, re.MULTILINE), r.stderr
    doc = summary(out)
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "fail", "build": "not run", "parity": "not run", "report": "not run"}
    assert not doc["passed"] and doc["failed"] == "calib" and doc["exit_code"] == 1 and doc["candidate"] is None
    files = {p.name for p in out.iterdir()}  # what ran is all there, whole; no report of a parity never run
    assert files == {f"{NAME}.onnx", f"{NAME}.json", f"{NAME}.int8.onnx", f"{NAME}.int8.json", "ship.json"}


def test_a_failed_parity_gate_still_writes_its_report(shapes: Path, tmp_path: Path, no_trt: None) -> None:
    out = tmp_path / "naive"
    # everything in INT8 is within calib's mAP budget on these images, but its detections agree
    # with PyTorch's far under the FP32 agreement gate asked for here (0.73 on all 8 at IoU 0.9)
    r = ship("--weights", str(DEMO), "--data", str(shapes), "--precision", "int8", "--imgsz", "320", "--exclude", "none",
             "--calib-images", "8", "--max-images", "4", "--min-agreement", "0.95", "--agreement-iou", "0.9",
             "-o", str(out))
    assert r.exit_code == 1, r.stderr
    assert re.search(r"^attn-deploy: ship stopped at parity: detection agreement 0\.\d+ < 0\.95", r.stderr, re.MULTILINE)
    doc = summary(out)
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "pass", "build": "skipped", "parity": "fail", "report": "pass"}
    assert doc["failed"] == "parity" and doc["candidate"] == f"{NAME}.int8.onnx" and doc["deployable"] is None
    report = json.loads((out / "report.json").read_text())
    assert report["ship"]["failed"] == "parity" and not report["parity"]["passed"] and (out / "report.html").is_file()


def test_docs_python_example_runs_as_written(shapes: Path, tmp_path: Path, no_trt: None,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "howto" / "ship.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    assert "from attn_deploy import ShipOptions, ship" in block
    (tmp_path / "demo").symlink_to(ROOT / "demo")
    (tmp_path / "shapes").symlink_to(shapes.parent)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/howto/ship.md", "exec"), {})  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    folder = re.search(r'output="([^"]+)"', block).group(1)  # the block names its folder
    assert f"shipped {folder}/{NAME}.fp16.onnx" in out and re.search(r"^calib +pass +damage", out, re.MULTILINE)
    doc = summary(tmp_path / folder)
    assert doc["passed"] and doc["precision"] == "fp16" and doc["options"]["imgsz"] == [320, 320]
    assert {f"{NAME}.fp16.onnx", f"{NAME}.fp16.json", "report.html"} <= {p.name for p in (tmp_path / folder).iterdir()}


def test_bad_input_met_on_the_way_is_recorded_then_refused(shapes: Path, tmp_path: Path, no_trt: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration images that fail only when calib reads them (stood in for): exit 2 in one
    line, and ship.json says where the run stopped; what was written before is whole."""
    from attn_deploy.errors import UserError

    def unreadable(*_args: Any, **_kwargs: Any) -> None:
        raise UserError("no readable calibration images in shapes/images/train")

    monkeypatch.setattr("attn_deploy.calib.calibrate.calibrate", unreadable)
    out = tmp_path / "halted"
    r = ship("--model", "yolov5n", "--imgsz", "64", "--data", str(shapes), "--precision", "fp16", "-o", str(out))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == "attn-deploy: error: no readable calibration images in shapes/images/train"
    doc = summary(out)
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "fail", "build": "not run", "parity": "not run", "report": "not run"}
    assert doc["failed"] == "calib" and doc["exit_code"] == 2 and "no readable" in next(s for s in doc["steps"] if s["name"] == "calib")["why"]
    assert {p.name for p in out.iterdir()} == {"yolov5n.onnx", "yolov5n.json", "ship.json"}


def _fake_build(onnx_path: Any, output: Any, opts: Any) -> Any:
    """TensorRT's build stood in for: the 'engine' is the ONNX's bytes (run by ONNX Runtime)."""
    from attn_deploy.engines.build import BuildResult

    out = Path(output)
    out.write_bytes(Path(onnx_path).read_bytes())
    side = {"tensorrt": "10.13.0", "precision": opts.precision, "plan": {"note": ""}}
    out.with_name(out.name + ".json").write_text(json.dumps(side))
    return BuildResult(out, side)


def test_with_tensorrt_the_engine_is_built_and_judged(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build branch on the CPU: build_engine and the engine's runner stood in for (the real
    ones: test_trt_doubles.py and the needs_trt test below); the demo, dynamic fp32."""
    from attn_deploy.engines import OnnxrtRunner

    seen: list[str] = []
    monkeypatch.setattr("attn_deploy.engines.trt.tensorrt_version", lambda: "10.13.0")
    monkeypatch.setattr("attn_deploy.engines.build.build_engine", _fake_build)
    monkeypatch.setattr("attn_deploy.engines.runner_for", lambda p: seen.append(Path(p).name) or OnnxrtRunner(p))
    out = tmp_path / "trt"
    r = ship("--weights", str(DEMO), "--data", str(shapes), "--imgsz", "320", "--precision", "fp32", "--dynamic",
             "--max-images", "2", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert r.stderr == "" and seen == [f"{NAME}.engine"]
    doc = summary(out)
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "skipped", "build": "pass", "parity": "pass", "report": "pass"}
    assert doc["deployable"] == f"{NAME}.engine" and doc["tensorrt"] == "10.13.0"
    assert {f"{NAME}.engine", f"{NAME}.engine.json"} <= set(doc["artefacts"])


def test_anchor_free_family_ships_the_same_way(shapes: Path, tmp_path: Path, no_trt: None) -> None:
    """ship knows no family: the anchor-free demo (a yolo11n-ca) goes the same way."""
    out = tmp_path / "y11"
    r = ship("--weights", str(ROOT / "demo" / "yolo11n-ca-shapes.pt"), "--data", str(shapes), "--imgsz", "320",
             "--precision", "fp32", "--max-images", "4", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    doc = summary(out)
    assert doc["status"] == {"verify": "skipped", "export": "pass", "calib": "skipped", "build": "skipped", "parity": "pass", "report": "pass"}
    assert doc["deployable"] == "yolo11n-ca-shapes.onnx"
    assert json.loads((out / "yolo11n-ca-shapes.json").read_text())["family"] == "yolo11"


def test_yolo26_ships_its_nms_free_head(tmp_path: Path, no_trt: None) -> None:
    """Exported with its (N, max-det, 6) head; the seeded model detects nothing, so parity refuses."""
    out = tmp_path / "y26"
    r = ship("--model", "yolo26n", "--imgsz", "320", "--precision", "fp32", "--end2end", "--max-det", "100",
             "--max-images", "2", "-o", str(out))
    assert r.exit_code == 2 and "no detections on either side of 2 images" in r.stderr, r.stderr
    side = json.loads((out / "yolo26n.json").read_text())
    assert side["output_layout"] == "xyxy_score_cls" and side["outputs"][0]["shape"] == [1, 100, 6]
    assert summary(out)["status"]["export"] == "pass" and summary(out)["failed"] == "parity"
    r = ship("--model", "yolo11n", "--end2end", "--precision", "fp32", "-o", str(tmp_path / "no"))
    assert r.exit_code == 2 and "one-to-one" in r.stderr and not (tmp_path / "no").exists()


def test_a_model_that_detects_nothing_is_refused_at_parity(tmp_path: Path, no_trt: None) -> None:
    """Seeded weights on random images detect nothing: an agreement of 1.0 from nothing is no pass."""
    out = tmp_path / "nothing"
    r = ship("--model", "yolo11n", "--imgsz", "160", "--precision", "fp32", "--max-images", "2", "-o", str(out), "--json")
    assert r.exit_code == 2 and r.stdout == "", r.stderr
    assert r.stderr.strip().endswith("no detections on either side of 2 images: the detection gates compared nothing "
                                     "(a trained model (--weights) on images with its objects (--data))"), r.stderr
    doc = summary(out)
    assert doc["failed"] == "parity" and doc["exit_code"] == 2 and doc["status"]["parity"] == "fail"
    assert not doc["passed"] and doc["deployable"] is None
    r = ship("--model", "yolo11n", "--end2end", "--precision", "fp32", "-o", str(tmp_path / "no"))
    assert r.exit_code == 2 and "one-to-one" in r.stderr and not (tmp_path / "no").exists()


@pytest.mark.needs_trt
@pytest.mark.needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_real_tensorrt_engine(shapes: Path, tmp_path: Path, precision: str) -> None:
    out = tmp_path / precision
    r = ship("--weights", str(DEMO), "--data", str(shapes), "--precision", precision, "--imgsz", "320", "--exclude", "none",
             "--calib-images", "8", "--min-agreement", "0.5", "--max-map-drop", "5", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    doc = summary(out)
    engine = f"{NAME}.engine" if precision == "fp32" else f"{NAME}.int8.engine"
    assert doc["status"]["build"] == "pass" and doc["deployable"] == engine
    assert json.loads((out / f"{engine}.json").read_text())["onnx_precision"] == precision


@pytest.mark.parametrize("args,needle", [
    (["--weights", "missing.pt", "--precision", "fp32"], "weights file not found: missing.pt"),
    (["--weights", str(DEMO), "--data", "bad", "--imgsz", "320"], "no usable image"),
    (["--weights", str(DEMO), "--precision", "fp32", "-o", "afile"], "it exists and is not a folder"),
    (["--weights", str(DEMO), "--precision", "fp32", "-o", "used"], "is not empty"),
    (["--weights", str(DEMO), "--precision", "int8"], "needs --data"),
    (["--weights", str(DEMO), "--data", "bad", "--dynamic"], "needs a fixed input size"),
    (["--weights", str(DEMO), "--precision", "fp32", "--imgsz", "330"], "not a multiple of the model's stride"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_text("not an image")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = ship(*args)
    finally:
        os.chdir(cwd)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and r.stdout == "" and len(lines) == 1 and needle in lines[0], r.stderr
    assert lines[0].startswith("attn-deploy: error: ") and sorted(tmp_path.rglob("*")) == before


def test_force_removes_only_what_the_previous_ship_listed(tmp_path: Path) -> None:
    from attn_deploy.shipping import _clear_previous

    (tmp_path / "ship.json").write_text(json.dumps({"artefacts": ["m.onnx", "m.engine", "../outside", "/etc/passwd"]}))
    for name in ("m.onnx", "m.engine", "notes.txt"):
        (tmp_path / name).write_text(name)
    _clear_previous(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_import_attn_deploy_is_cheap_and_the_api_resolves() -> None:
    code = "import sys, attn_deploy; print(sorted(m for m in sys.modules if m.startswith('attn_deploy.') or m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(attn_deploy.__all__) == {*attn_deploy._API, "__version__"}
    for name in attn_deploy.__all__:
        assert getattr(attn_deploy, name) is not None and name in dir(attn_deploy)
    for name in set(attn_deploy.__all__) - {"__version__"}:  # the docstrings are the documentation
        doc = getattr(attn_deploy, name).__doc__ or ""
        assert doc and not doc.startswith(f"{name}("), f"{name} has no docstring of its own"
    with pytest.raises(AttributeError):
        attn_deploy.no_such_thing  # noqa: B018


def test_layers_take_only_the_version_from_the_package() -> None:
    """The package's face sits above every layer: none imports the API back from it (a
    submodule, ``from attn_deploy import files``, is no import of the face)."""
    wrong = []
    for path in (ROOT / "attn_deploy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "attn_deploy" and not node.level:
                wrong += [f"{path.name}: {a.name}" for a in node.names if a.name != "__version__"
                          and not (ROOT / "attn_deploy" / a.name).is_dir() and not (ROOT / "attn_deploy" / f"{a.name}.py").is_file()]
    assert not wrong
