"""The catalogue of hostile and bad input: every case ends in one line on stderr that names
the problem, the right exit code, no traceback, nothing left behind, and nothing executed.

Add a case here for every bug of this kind found: the maker of a hostile file goes in
``hostile.py``, the invocation in one of the tables below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from attn_deploy.cli import main
from hostile import CHECKPOINTS, MARKER, YAMLS


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def refused(folder: Path, args: list[str], needle: str, code: int = 2) -> str:
    """Run the CLI in ``folder``; assert the promise on bad input; return the error line."""
    before = _listing(folder)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        r = CliRunner().invoke(main, args)
    finally:
        os.chdir(cwd)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == code, (args, r.exit_code, r.stderr, r.exception)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("attn-deploy: error: ") and len(lines[0]) <= 300, lines[0]
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    assert r.stdout == "", r.stdout
    assert _listing(folder) == before, _listing(folder) - before  # nothing written, nothing half-written
    assert not (folder / MARKER).exists() and not Path(MARKER).exists()
    return lines[0]


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    r = CliRunner().invoke(main, ["export", "--model", "yolov5n", "--imgsz", "64", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    return out


@pytest.fixture
def box(tmp_path: Path, small_onnx: Path) -> Path:
    """A working folder with a valid ONNX, unreadable images and a few broken files."""
    shutil.copy(small_onnx, tmp_path / "m.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("hello\n")
    (tmp_path / "cut.onnx").write_bytes(small_onnx.read_bytes()[:5000])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    (bad / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (tmp_path / "noimages").mkdir()
    os.mkfifo(tmp_path / "fifo.onnx")  # not a regular file: a rename onto it would replace the node
    _relu(tmp_path / "dangling.onnx", [1], "ghost")
    _relu(tmp_path / "vector.onnx", [1])  # valid, but its input is no image
    _relu(tmp_path / "noout0.onnx", [1, 3, 64, 64])  # an image in, but no output0
    return tmp_path


def _relu(path: Path, shape: list[int], source: str = "x") -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", [source], ["y"], name="r")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("verb", ["info", "export"])
@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_hostile_checkpoint(tmp_path: Path, case: str, verb: str) -> None:
    make, needle = CHECKPOINTS[case]
    path = make(tmp_path)
    extra = ["--imgsz", "64", "--no-check"] if verb == "export" else []
    refused(tmp_path, [verb, "--weights", path.name, *extra], needle)


@pytest.mark.parametrize("case", sorted(YAMLS))
def test_hostile_yaml(tmp_path: Path, case: str) -> None:
    make, needle = YAMLS[case]
    path = make(tmp_path)
    refused(tmp_path, ["export", "--cfg", path.name, "--imgsz", "64", "--no-check"], needle)


BAD_INVOCATIONS = [
    # models, info
    (["models", "--bogus"], "no such option"),
    (["info", "--model", "yolov5q-zz"], "unknown model"),
    (["info", "--weights", "missing.pt"], "not found"),
    (["info", "--weights", "bad"], "is a directory"),
    (["info", "--cfg", "missing.yaml"], "not found"),
    (["info", "--model", "yolov5n", "--imgsz", "100000"], "4096"),
    (["info", "--model", "yolov5n", "--imgsz", "0"], "outside 1 to 4096"),
    (["info", "--model", "yolov5n", "--imgsz", "64,abc"], "not an image size"),
    (["info", "--model", "yolov5n", "--imgsz", "9" * 400], "not an image size"),
    # export
    (["export", "--model", "yolov5n", "--imgsz", "100000"], "4096"),
    (["export", "--model", "yolov5n", "--imgsz", "4096", "--batch", "64"], "smaller batch"),
    (["export", "--model", "yolov5n", "--batch", "0"], "--batch"),
    (["export", "--model", "yolov5n", "--opset", "99"], "--opset 99"),
    (["export", "--model", "yolov5n", "--nms", "--topk", "0"], "--topk"),
    (["export", "--model", "yolov5n", "--nms", "--iou-thres", "2"], "--iou-thres"),
    (["export", "--model", "yolov5n", "--nms", "--conf-thres", "-1"], "--conf-thres"),
    (["export", "--model", "yolov5n", "--imgsz", "64", "-o", "/proc/x.onnx"], "cannot write"),
    (["export", "--model", "yolov5n", "--imgsz", "64", "-o", "nowhere/x.onnx"], "does not exist"),
    (["export", "--model", "yolov5n", "--imgsz", "64", "-o", "bad"], "is a directory"),
    (["export", "--model", "yolov5n", "--cfg", "x.yaml"], "not both"),
    (["export", "--model", "yolov5n", "--imgsz", "64", "-o", "fifo.onnx"], "not a regular file"),
    (["export", "--model", "yolov8n", "--imgsz", "64", "--end2end"], "no one-to-one head"),
    (["export", "--model", "yolo26n", "--imgsz", "320", "--end2end", "--nms"], "needs no NMS"),
    (["export", "--model", "yolo26n", "--imgsz", "64", "--end2end"], "fewer than --max-det"),
    (["export", "--model", "yolo26n", "--end2end", "--max-det", "5000"], "--max-det"),
    (["info", "--model", "yolo11q"], "unknown model"),
    (["info", "--model", "yolo12n-nope"], "unknown model"),
    (["parity", "--model", "yolov8n", "--against", "m.onnx"], "output0 is"),
    # verify (the fork's code runs only once these pass)
    (["verify", "--model", "yolov5n", "--fork", "bad"], "needs --weights"),
    (["verify", "--weights", "missing.pt", "--fork", "bad"], "not found"),
    (["verify", "--weights", "missing.pt", "--fork", "bad", "--images", "0"], "--images"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "--fork", "bad"], "needs --weights"),
    # lint
    (["lint", "missing.onnx"], "not found"),
    (["lint", "empty.onnx"], "empty"),
    (["lint", "text.onnx"], "not an ONNX model"),
    (["lint", "cut.onnx"], "not an ONNX model"),
    (["lint", "dangling.onnx"], "'ghost'"),
    (["lint", "bad"], "is a directory"),
    # parity
    (["parity", "--model", "yolov5n", "--against", "missing.onnx"], "not found"),
    (["parity", "--model", "yolov5n", "--against", "empty.onnx"], "empty"),
    (["parity", "--model", "yolov5n", "--against", "dangling.onnx"], "not a valid ONNX graph"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--data", "bad"], "no usable image"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--data", "bad", "--per-block"], "no usable image"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--data", "bad", "--report", "rep"], "no usable image"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--data", "noimages"], "no images"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx"], "no detections on either side of 8 images"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--data", "missing"], "not found"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--max-images", "0"], "--max-images"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--min-agreement", "2"], "--min-agreement"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--agreement-iou", "1.5"], "--agreement-iou"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--max-map-drop", "-1"], "--max-map-drop"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--block-images", "0"], "--block-images"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--imgsz", "96"], "fixed at 64,64"),
    (["parity", "--model", "yolov5n", "--against", "text.onnx"], "not an ONNX model"),
    (["parity", "--model", "yolov5n", "--against", "text.onnx", "--per-block"], "not an ONNX model"),
    (["parity", "--model", "yolov5n", "--against", "empty.onnx", "--per-block"], "empty"),
    (["parity", "--model", "yolov5n", "--against", "dangling.onnx", "--per-block"], "not a valid ONNX graph"),
    (["parity", "--model", "yolov5n", "--against", "vector.onnx"], "one NCHW image input"),
    (["parity", "--model", "yolov5n", "--against", "noout0.onnx"], "no 'output0'"),
    (["parity", "--model", "yolov5n", "--against", "m.onnx", "--report", "fifo.onnx"], "report"),
    # calib
    (["calib", "empty.onnx", "--precision", "int8", "--data", "bad"], "empty"),
    (["calib", "m.onnx", "--precision", "int8", "--data", "bad"], "no usable image"),
    (["calib", "m.onnx", "--precision", "fp16", "--data", "bad"], "no usable image"),
    (["calib", "m.onnx", "--precision", "int8"], "needs images"),
    (["calib", "m.onnx", "--precision", "int4", "--data", "bad"], "--precision"),
    (["calib", "m.onnx", "--precision", "int8", "--images", "0"], "--images"),
    (["calib", "m.onnx", "--precision", "int8", "--max-map-drop", "-1"], "--max-map-drop"),
    (["calib", "m.onnx", "--precision", "int8", "--min-int8", "1.5"], "--min-int8"),
    (["calib", "m.onnx", "--precision", "int8", "--data", "bad", "--method", "kl"], "--method"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "--agreement-iou", "-1"], "--agreement-iou"),
    (["ship", "--model", "yolov5n", "--precision", "int8", "--min-int8", "-0.1"], "--min-int8"),
    (["calib", "m.onnx", "--precision", "int8", "--data", "bad", "-o", "/proc/x.onnx"], "cannot write"),
    (["calib", "m.onnx", "--precision", "int8", "--data", "bad", "-o", "m.onnx"], "the input itself"),
    (["calib", "m.onnx", "--precision", "int8", "--data", "bad", "--cache", "/proc/x.cache"], "cannot write"),
    (["calib", "m.onnx", "--precision", "int8", "--exclude", "auto", "--exclude", "x"], "stand alone"),
    (["calib", "m.onnx", "--precision", "int8", "--data", "bad", "--exclude", "["], "not a regular expression"),
    # build (no TensorRT here: bad files are refused before it is asked for)
    (["build", "missing.onnx"], "not found"),
    (["build", "empty.onnx"], "empty"),
    (["build", "text.onnx"], "not an ONNX model"),
    (["build", "dangling.onnx"], "not a valid ONNX graph"),
    (["build", "m.onnx", "--workspace", "0"], "--workspace"),
    (["build", "m.onnx", "--dla-core", "-1"], "--dla-core"),
    (["build", "m.onnx", "--min-shape", "1x3x64x64"], "all three"),
    # bench
    (["bench", "text.onnx"], "not an ONNX model"),
    (["bench", "empty.onnx"], "empty"),
    (["bench", "yolov5n", "--iterations", "0"], "--iterations"),
    (["bench", "yolov5n", "--batch", "0"], "--batch"),
    (["bench", "yolov5n", "--duration", "0"], "--duration"),
    (["bench", "yolov5n", "--iterations", "5", "--duration", "2"], "--iterations and --duration both"),
    (["bench", "yolov5n", "--imgsz", "100000"], "4096"),
    (["bench", "yolov5n", "--batch", "1000", "--imgsz", "4096"], "smaller batch"),
    (["bench", "yolov5q-zz"], "unknown model"),
    (["bench", "vector.onnx"], "one NCHW image input"),
    (["bench", "--compare", "yolov5n", "m.onnx", "--imgsz", "64", "--iterations", "1", "--warmup", "0", "-o", "/proc/b"],
     "cannot write"),
    (["bench", "yolov5n", "yolov5s"], "--compare"),
    # ship (refused before the model is exported: nothing is written)
    (["ship", "--model", "yolov5q-zz", "--precision", "fp32"], "unknown model"),
    (["ship", "--weights", "missing.pt", "--precision", "fp32"], "not found"),
    (["ship", "--model", "yolov5n", "--precision", "int8"], "needs --data"),
    (["ship", "--model", "yolov5n", "--precision", "int4"], "--precision"),
    (["ship", "--model", "yolov5n", "--data", "bad", "--imgsz", "64"], "no usable image"),
    (["ship", "--model", "yolov5n", "--data", "bad", "--imgsz", "64", "--on-error", "fail"], "--on-error skip"),
    (["ship", "--model", "yolov5n", "--data", "noimages"], "no images"),
    (["ship", "--model", "yolov5n", "--data", "missing"], "not found"),
    (["ship", "--model", "yolov5n", "--data", "bad", "--dynamic"], "fixed input size"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "--imgsz", "100"], "stride"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "--batch", "0"], "--batch"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "--max-images", "0"], "--max-images"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "--min-agreement", "2"], "--min-agreement"),
    (["ship", "--model", "yolov5n", "--data", "bad", "--exclude", "auto", "--exclude", "x"], "stand alone"),
    (["ship", "--model", "yolov5n", "--precision", "int8", "--data", "bad", "--exclude", "["], "not a regular expression"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "-o", "m.onnx"], "not a folder"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "-o", "fifo.onnx"], "not a folder"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "-o", "bad"], "not empty"),
    (["ship", "--model", "yolov5n", "--precision", "fp32", "-o", "/proc/x"], "cannot write"),
]


@pytest.mark.parametrize("args,needle", BAD_INVOCATIONS, ids=[" ".join(a)[:60] for a, _ in BAD_INVOCATIONS])
def test_bad_invocation(box: Path, args: list[str], needle: str) -> None:
    refused(box, args, needle)


def test_fewer_usable_images_than_asked_is_said(box: Path) -> None:
    """Two readable images among five: compared, and the counts say so (the demo model, which
    detects the shapes on them: a gate needs detections to compare)."""
    import json

    import cv2

    from attn_deploy.train.shapes import ShapesSpec, make_image

    for i in range(2):
        cv2.imwrite(str(box / "bad" / f"ok{i}.png"), make_image(ShapesSpec(), "val", i)[0])
    demo = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"
    onnx_path = box / "demo.onnx"
    assert CliRunner().invoke(main, ["export", "--weights", str(demo), "--imgsz", "192", "--no-check",
                                     "-o", str(onnx_path)]).exit_code == 0
    r = CliRunner().invoke(main, ["parity", "--weights", str(demo), "--against", str(onnx_path),
                                  "--data", str(box / "bad"), "--json"])
    doc = json.loads(r.stdout)
    assert doc["images"] == 2 and doc["images_requested"] == 5 and doc["images_skipped"] == 3
    assert "compared 2 of 5 images" in r.stderr and "Traceback" not in r.stderr


def test_verbose_shows_what_lies_underneath(box: Path) -> None:
    r = CliRunner().invoke(main, ["--verbose", "lint", str(box / "dangling.onnx")])
    assert r.exit_code == 2 and "ValidationError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("attn-deploy: error: ")


@pytest.mark.parametrize("case", ["os.system in a plain pickle", "billion laughs"])
def test_console_script_in_a_real_process(tmp_path: Path, case: str) -> None:
    """The installed entry point, not CliRunner: one line, exit 2, nothing run."""
    make, needle = CHECKPOINTS.get(case) or YAMLS[case]
    path = make(tmp_path)
    flag = "--weights" if case in CHECKPOINTS else "--cfg"
    r = subprocess.run([sys.executable, "-c", "from attn_deploy.cli import run; run()", "info", flag, str(path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert not (tmp_path / MARKER).exists()
