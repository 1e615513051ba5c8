"""Quantization-aware fine-tuning (``qat``, ``calib --qat``, ``ship --qat``): the demo folded and
fake-quantized (NVIDIA Model Optimizer, on the CPU), fine-tuned briefly, exported to Q/DQ with
every convolution in INT8 but the head's outputs, scored against float32 as calib scores, and its checkpoint loading
like any other and exporting the same graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from attn_deploy.cli import main

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attn_deploy.train.shapes import write_dataset

    return write_dataset(tmp_path_factory.mktemp("qat") / "shapes", train=32, val=24)


@pytest.fixture(scope="module")
def fine_tuned(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path]:
    out = tmp_path_factory.mktemp("qat-out") / "demo.qat.int8.onnx"
    r = CliRunner().invoke(main, ["qat", "--weights", str(DEMO), "--data", str(shapes), "--epochs", "1",
                                  "--imgsz", "192", "--images", "16", "--max-map-drop", "5", "-o", str(out), "--json"])
    return r.exit_code, (json.loads(r.stdout) if r.stdout else {"stderr": r.stderr}), out


def test_qat_writes_a_graph_with_every_convolution_but_the_heads_outputs_in_int8(fine_tuned: tuple[int, dict, Path]) -> None:
    code, doc, out = fine_tuned
    assert code == 0, doc
    assert doc["method"] == "qat" and doc["lint_passed"]
    graph = onnx.load(out)
    made = {o: n.op_type for n in graph.graph.node for o in n.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    floating = [n.name for n in convs if not made.get(n.input[0]) == made.get(n.input[1]) == "DequantizeLinear"]
    assert len(convs) > 50 and floating == [f"/model.25/m.{i}/Conv" for i in range(3)]  # the Detect's outputs only
    # their share, counted by hand: 192 px at strides 8, 16, 32; 64, 128, 256 channels in; 3 x (5 + 5) out
    head = sum((192 // s) ** 2 * c * 30 for s, c in ((8, 64), (16, 128), (32, 256)))
    assert doc["coverage"]["float_macs"] == head and doc["coverage"]["float_layers"] == {
        "model.25": round(head / doc["coverage"]["macs"], 4)}
    assert 0.98 < doc["coverage"]["int8_share"] < 0.995 and doc["excluded_groups"] == ["model.25 Detect outputs"]
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"]["method"] == "qat" and side["onnx"]["from"] == "demo.onnx"
    assert side["layers"][9]["output"].startswith("/model.9/")  # the boundaries found again in the Q/DQ graph
    assert (out.parent / "demo.onnx").is_file() and doc["checkpoint"] == str(out.parent / "demo.qat.pt")
    # bug found: the float reference's sidecar named the model ('yolov5n-ca-shapes') and not its
    # weights, so calib --qat on it failed with "unknown model"
    assert json.loads((out.parent / "demo.json").read_text())["source"] == {"weights": str(DEMO)}


def test_the_reported_damage_is_the_graphs_own(fine_tuned: tuple[int, dict, Path], shapes: Path) -> None:
    """Scored again, independently of the run: the float32 reference and the written graph."""
    from attn_deploy.calib.evaluate import Evaluator

    _, doc, out = fine_tuned
    ev = Evaluator(shapes, (192, 192), 1, None)
    ref = ev.set_reference(out.parent / "demo.onnx")
    assert ev.score(out).damage(ref) == pytest.approx(doc["damage"], abs=1e-9)


def test_its_checkpoint_loads_like_any_other_and_exports_the_same_graph(fine_tuned: tuple[int, dict, Path]) -> None:
    from attn_deploy.engines import OnnxrtRunner
    from attn_deploy.models import load_model
    from attn_deploy.models.quantized import is_quantized

    _, _, out = fine_tuned
    ckpt = out.parent / "demo.qat.pt"
    assert is_quantized(load_model(weights=ckpt))
    again = out.parent / "again.onnx"
    r = CliRunner().invoke(main, ["export", "--weights", str(ckpt), "--imgsz", "192", "-o", str(again), "--json"])
    assert r.exit_code == 0, r.stderr
    assert "not run on a quantized model" in json.loads(r.stdout)["parity_note"]
    x = np.random.default_rng(0).random((1, 3, 192, 192), dtype=np.float32)
    a, b = OnnxrtRunner(str(again)).run({"images": x}), OnnxrtRunner(str(out)).run({"images": x})
    np.testing.assert_array_equal(a["output0"], b["output0"])


def test_the_fine_tune_keeps_the_epoch_the_held_out_images_judge_best(shapes: Path) -> None:
    """The weights kept are those after the epoch whose damage on the held-out images was the
    least (scripted here: the second of three), not the last epoch's."""
    import torch

    from attn_deploy.models import load_model
    from attn_deploy.train.qat import QatRecipe, fine_tune

    seen: list[dict[str, torch.Tensor]] = []
    scripted = iter([0.5, 0.1, 0.3])

    def judge(model: torch.nn.Module) -> float:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    images = np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32)
    recipe = QatRecipe(epochs=3, imgsz=64, batch=8, holdout=8, lr=1e-2)
    model, selection = fine_tune(load_model(weights=DEMO), shapes, images, recipe, judge=judge)
    assert selection.to_dict() == {"held_out_images": 8, "damage_by_epoch": [0.5, 0.1, 0.3], "epoch": 2}
    kept = model.state_dict()
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], seen[2][k]) for k in kept)  # the last epoch moved on


def test_qat_holds_a_fifth_of_the_train_split_out_and_keeps_its_best_epoch(tmp_path: Path) -> None:
    from attn_deploy.qat import held_out
    from attn_deploy.train.shapes import write_dataset

    data = write_dataset(tmp_path / "shapes", train=40, val=8)
    assert held_out(data, 2) == 8 and held_out(data, 1) == 0  # one epoch: nothing to choose between
    assert held_out(write_dataset(tmp_path / "fewer", train=39, val=1), 2) == 0  # 7 would judge nothing
    out = tmp_path / "demo.qat.int8.onnx"
    r = CliRunner().invoke(main, ["qat", "--weights", str(DEMO), "--data", str(data), "--epochs", "2", "--imgsz", "128",
                                  "--images", "8", "--max-map-drop", "50", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    chosen = json.loads(r.stdout)["qat_selection"]
    assert chosen["held_out_images"] == 8 and len(chosen["damage_by_epoch"]) == 2
    assert chosen["damage_by_epoch"][chosen["epoch"] - 1] == min(chosen["damage_by_epoch"])
    assert json.loads(out.with_suffix(".json").read_text())["precision"]["qat_selection"] == chosen


def test_calib_qat_takes_the_model_the_sidecar_names(fine_tuned: tuple[int, dict, Path], shapes: Path,
                                                      tmp_path: Path) -> None:
    """The same fine-tune from the exported graph: the same damage (fixed seeds, no clock)."""
    _, doc, _ = fine_tuned
    src = tmp_path / "demo.onnx"
    assert CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "192", "-o", str(src)]).exit_code == 0
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--qat", "1", "--data", str(shapes),
                                  "--images", "16", "--max-map-drop", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["method"] == "qat" and again["damage"] == pytest.approx(doc["damage"], abs=1e-9)
    assert (tmp_path / "demo.qat.int8.onnx").is_file() and (tmp_path / "demo.qat.pt").is_file()


def test_ship_qat_ships_the_fine_tuned_graph(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("attn_deploy.engines.trt.tensorrt_version", lambda: None)
    out = tmp_path / "ship"
    r = CliRunner().invoke(main, ["ship", "--weights", str(DEMO), "--data", str(shapes), "--precision", "int8", "--qat", "1",
                                  "--imgsz", "192", "--calib-images", "16", "--max-map-drop", "5", "--min-agreement", "0",
                                  "-o", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    calib = next(s for s in json.loads(r.stdout)["steps"] if s["name"] == "calib")
    assert "99.0% of MACs in INT8" in calib["why"] and "yolov5n-ca-shapes.qat.pt" in calib["artefacts"]
    report = json.loads((out / "report.json").read_text())
    assert report["calib"]["method"] == "qat" and report["parity"]["candidate"] == "yolov5n-ca-shapes.int8.onnx"


@pytest.mark.parametrize("args,needle", [
    (["qat", "--weights", str(DEMO), "--data", "images"], "is a directory"),
    (["qat", "--weights", str(DEMO), "--data", "plain.onnx"], "needs --data DATA.yaml"),
    (["qat", "--model", "yolov5n", "--data", "d.yaml", "--epochs", "0"], "--epochs"),
    (["calib", "plain.onnx", "--precision", "int8", "--qat", "1", "--data", "d.yaml"], "names none"),
    (["calib", "plain.onnx", "--precision", "fp16", "--qat", "1", "--data", "d.yaml"], "--precision int8"),
    (["ship", "--weights", str(DEMO), "--precision", "fp16", "--qat", "1", "--data", "d.yaml"], "--precision int8"),
])
def test_qat_bad_input_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    from test_hostile import _relu, refused

    (tmp_path / "images").mkdir()
    (tmp_path / "d.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [a]\n")
    _relu(tmp_path / "plain.onnx", [1, 3, 64, 64])
    refused(tmp_path, args, needle)
