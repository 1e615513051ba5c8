"""INT8 that is INT8: the share of MACs in INT8 (counted from the graph, checked against the
model's own FLOPs), the floor under which nothing is called INT8, the choice of the set that
keeps the fewest MACs out, the jackknife error of a subset's damage, and the same graph from
the same command twice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from attn_deploy.calib.coverage import coverage
from attn_deploy.onnxfile import node_macs
from attn_deploy.calib.evaluate import FOLDS, Score
from attn_deploy.calib.search import Decision, fewest_macs_out
from attn_deploy.calib.surgery import keep_out
from attn_deploy.cli import main
from attn_deploy.exporter.layers import layer_nodes
from attn_deploy.parity.coco import CocoEvaluator
from attn_deploy.parity.nms import Detections

DEMO = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-shapes.pt"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """The demo at 256, its shapes images, and its everything-in-INT8 graph."""
    from attn_deploy.calib.evaluate import calibration_images
    from attn_deploy.calib.int8 import quantize_int8
    from attn_deploy.train.shapes import write_dataset

    root = tmp_path_factory.mktemp("coverage")
    data = write_dataset(root / "shapes", train=16, val=32)
    r = CliRunner().invoke(main, ["export", "--weights", str(DEMO), "--imgsz", "256", "-o", str(root / "demo.onnx")])
    assert r.exit_code == 0, r.stderr
    images, _ = calibration_images(data, (256, 256), 16)
    return root / "demo.onnx", data, quantize_int8(root / "demo.onnx", images, "max")


def test_macs_from_the_graph_equal_the_models_own_count(demo: tuple[Path, Path, bytes]) -> None:
    """Summed from the ONNX's shapes, twice the MACs are the GFLOPs 'info' counts on the PyTorch model."""
    src, _, _ = demo
    macs = node_macs(onnx.load(src))
    info = CliRunner().invoke(main, ["info", "--weights", str(DEMO), "--imgsz", "256", "--json"])
    assert abs(2 * sum(macs.values()) / 1e9 - json.loads(info.stdout)["gflops"]) < 1e-6
    assert len(macs) == sum(n.op_type == "Conv" for n in onnx.load(src).graph.node)


def test_coverage_counts_what_runs_in_int8(demo: tuple[Path, Path, bytes]) -> None:
    src, _, naive = demo
    model, q = onnx.load(src), onnx.load_from_string(naive)
    macs = node_macs(model)
    assert coverage(q, macs).share == 1.0  # Model Optimizer quantizes every convolution
    assert coverage(model, macs).share == 0.0  # the float graph: nothing
    nodes = layer_nodes(model)
    detect, c3 = nodes[max(nodes)], nodes[4]
    cut = coverage(keep_out(q, detect + c3), macs)
    out = sum(macs.get(n, 0) for n in detect + c3)
    assert cut.int8 == cut.total - out and set(cut.floating) == {n for n in detect + c3 if n in macs}
    assert set(cut.by_layer()) == {"model.4", f"model.{max(nodes)}"}
    assert cut.by_layer()["model.4"] == pytest.approx(sum(macs.get(n, 0) for n in c3) / cut.total)


def test_below_the_floor_nothing_is_called_int8(demo: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    """Every layer kept out (they run in float16): within the budget, and no INT8 at all: exit 1,
    nothing written."""
    src, data, _ = demo
    out = tmp_path / "all-out.int8.onnx"
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--data", str(data), "--images", "8",
                                  "--exclude", "^/model", "-o", str(out), "--json"])
    assert r.exit_code == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["damage"] <= 0.5 and doc["coverage"]["int8_share"] == 0.0
    assert "leaves 0% of the MACs in INT8 (--min-int8 80%): not an INT8 model, nothing written; try --qat" in r.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()
    r = CliRunner().invoke(main, ["calib", str(src), "--precision", "int8", "--data", str(data), "--images", "8",
                                  "--exclude", "^/model", "--min-int8", "0", "--max-map-drop", "5", "-o", str(out)])
    assert r.exit_code == 0 and out.exists()  # asked for: a float graph under that name, said in its sidecar
    assert json.loads(out.with_suffix(".json").read_text())["precision"]["coverage"]["int8_share"] == 0.0


def test_the_set_keeping_the_fewest_macs_out_is_chosen() -> None:
    trials = [(["a"], 0.4), (["b", "c"], 0.45), (["a", "b"], 0.2), (["d"], 0.9)]
    cost = {"a": 100, "b": 10, "c": 20, "d": 1}
    got = fewest_macs_out(Decision(["a"], 0.4, True, trials), 0.5, lambda kept: sum(cost[g] for g in kept))
    assert got.kept == ["b", "c"] and got.damage == 0.45 and got.trials == trials
    over = Decision(["d"], 0.9, False, trials)
    assert fewest_macs_out(over, 0.5, lambda kept: 0) is over


def _dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.zeros(len(scores), np.int64))


def test_a_fold_left_out_equals_the_map_of_the_other_images() -> None:
    """The jackknife's leave-one-fold-out mAP, from one COCO matching, against a fresh evaluation
    of only the other images (the independent reference)."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(20):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0.2, 0.8, (n, 2))
        labels = np.concatenate([np.zeros((n, 1)), xy, np.full((n, 2), 0.2)], 1)
        boxes = [[(x - 0.1 + dx) * 100, (y - 0.1) * 100, (x + 0.1) * 100, (y + 0.1 + dy) * 100]
                 for (x, y), dx, dy in zip(xy, rng.normal(0, 0.03, n), rng.normal(0, 0.03, n))]
        images.append((labels, _dets(boxes, list(rng.uniform(0.3, 1.0, n)))))
    whole = CocoEvaluator(1)
    for labels, det in images:
        whole.add((100, 100), labels, det)
    result = whole.evaluate(FOLDS)
    assert len(result.folds) == FOLDS
    for fold in range(FOLDS):
        rest = CocoEvaluator(1)
        for i, (labels, det) in enumerate(images):
            if i % FOLDS != fold:
                rest.add((100, 100), labels, det)
        assert result.folds[fold] == pytest.approx(rest.evaluate().map50_95, abs=1e-9)


def test_the_damage_error_is_the_jackknife_of_the_paired_difference() -> None:
    ref = Score(0.5, 0.40, 1.0, (0.40, 0.41, 0.39, 0.40))
    same = Score(0.5, 0.38, 0.9, (0.38, 0.39, 0.37, 0.38))  # 2 points lower on every fold: no spread
    assert same.damage(ref) == pytest.approx(2.0) and same.damage_error(ref) == pytest.approx(0.0, abs=1e-12)
    noisy = Score(0.5, 0.38, 0.9, (0.40, 0.37, 0.39, 0.36))
    d = np.array([0.0, 4.0, 0.0, 4.0])
    assert noisy.damage_error(ref) == pytest.approx(np.sqrt(3 / 4 * ((d - d.mean()) ** 2).sum()))


@pytest.mark.slow
def test_the_same_command_makes_the_same_graph(demo: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    """The ranked search decides by counts and measured damage, never the clock: the same command
    run twice, as a user runs it (two processes), makes the same trials, keeps the same layers and
    writes the same bytes."""
    import subprocess
    import sys

    src, data, _ = demo
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}.onnx"
        r = subprocess.run([sys.executable, "-c", "from attn_deploy.cli import run; run()", "calib", str(src),
                            "--precision", "int8", "--data", str(data), "--images", "8", "--max-map-drop", "0.3",
                            "--min-int8", "0", "-o", str(out), "--json"], capture_output=True, text=True, timeout=600)
        assert r.returncode in (0, 1), r.stderr
        doc = json.loads(r.stdout)
        runs.append((hashlib.sha256(out.read_bytes()).hexdigest(), doc["excluded_groups"], doc["decision"]["trials"]))
    assert runs[0] == runs[1]
    assert runs[0][2], "the search ran trials"


def test_mixed_scales_take_the_second_calibration_where_asked(demo: tuple[Path, Path, bytes]) -> None:
    """--method best's edit: the layers asked for read the entropy graph's scales, the others keep
    max's; nothing else in the graph changes."""
    from attn_deploy.calib.evaluate import calibration_images
    from attn_deploy.calib.int8 import quantize_int8
    from attn_deploy.calib.scales import _scales, mix_scales, pair_owners

    src, data, naive = demo
    images, _ = calibration_images(data, (256, 256), 16)
    a, b = onnx.load_from_string(naive), onnx.load_from_string(quantize_int8(src, images, "entropy"))
    owners = pair_owners(a)
    assert set(owners.values()) <= set(layer_nodes(onnx.load(src)))
    values = lambda m: {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}  # noqa: E731
    mixed = mix_scales(a, b, [4, 9])
    got, mine, theirs = values(mixed), values(a), values(b)
    changed = 0
    for tensor, (q_scale, _) in _scales(a).items():
        want = theirs[_scales(b)[tensor][0]] if owners.get(tensor) in (4, 9) else mine[q_scale]
        np.testing.assert_array_equal(got[q_scale], want)
        changed += owners.get(tensor) in (4, 9) and not np.array_equal(mine[q_scale], theirs[_scales(b)[tensor][0]])
    assert changed > 0  # the two calibrations do differ there
    assert [n.op_type for n in mixed.graph.node] == [n.op_type for n in a.graph.node]
    assert mix_scales(a, b, []).SerializeToString() == a.SerializeToString()


def test_a_layer_goes_to_the_calibration_that_keeps_its_direction() -> None:
    from attn_deploy.calib.rank import LayerError
    from attn_deploy.calib.scales import better_layers

    first = [LayerError(1, "Conv", False, 0.05, 0.999), LayerError(2, "C3", False, 0.01, 0.990),
             LayerError(3, "Detect", False, 0.2, 0.98, "boxes"), LayerError(3, "Detect", False, 0.1, 0.97, "scores")]
    second = [LayerError(1, "Conv", False, 0.50, 0.998), LayerError(2, "C3", False, 0.09, 0.995),
              LayerError(3, "Detect", False, 0.1, 0.99, "boxes"), LayerError(3, "Detect", False, 0.1, 0.975, "scores")]
    assert better_layers(first, second) == [2, 3]  # cosine decides, not the max error; Detect by its worse part
