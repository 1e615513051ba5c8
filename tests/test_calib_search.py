"""calib's ranked INT8 search: the shortest-prefix decision on constructed damage, the Q/DQ
surgery against Model Optimizer's own exclusion, and the one-pass ranking against the local
errors that ``parity --per-block`` reports for the same graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from attn_deploy.calib.int8 import quantize_int8
from attn_deploy.calib.rank import local_errors, ranking
from attn_deploy.calib.search import shortest_prefix
from attn_deploy.calib.surgery import QDQ, keep_out, quantized_inputs
from attn_deploy.diagnose.blocks import per_block
from attn_deploy.diagnose.onnx_blocks import OnnxBlocks
from attn_deploy.engines import OnnxrtRunner
from attn_deploy.exporter import lint_onnx
from attn_deploy.exporter.layers import find_boundaries, layer_nodes, model_rows
from attn_deploy.exporter.torch2onnx import ExportSpec, torch_to_onnx
from attn_deploy.models.zoo import create_model

ORDER = [f"g{i}" for i in range(10)]


def damage_after(needed: int, calls: list[int]):
    """Damage falls as more of the order is kept: within 0.5 from ``needed`` groups on."""
    def measure(kept: list[str]) -> float:
        calls.append(len(kept))
        return 0.4 if len(kept) >= needed else 0.5 + (needed - len(kept)) * 0.3
    return measure


@pytest.mark.parametrize("needed", [1, 2, 3, 5, 8, 10])
def test_shortest_prefix_finds_the_fewest_groups(needed: int) -> None:
    calls: list[int] = []
    d = shortest_prefix(ORDER, 0.5, damage_after(needed, calls))
    assert d.within and d.kept == ORDER[:needed] and d.damage == 0.4
    assert len(calls) == len(set(calls)) <= 2 * int(np.ceil(np.log2(needed))) + 2  # doubling, then halving
    assert [len(k) for k, _ in d.trials] == calls


def test_shortest_prefix_stops_refining_when_time_is_up() -> None:
    calls: list[int] = []
    d = shortest_prefix(ORDER, 0.5, damage_after(5, calls), more=lambda: len(calls) < 4)
    assert calls == [1, 2, 4, 8] and d.within and d.kept == ORDER[:8]  # found, not refined: 8 stands
    calls.clear()
    d = shortest_prefix(ORDER, 0.5, damage_after(5, calls), more=lambda: False)
    assert calls == [1, 2, 4, 8] and d.within  # out of time from the start: still a set within the budget


def test_shortest_prefix_out_of_reach_says_so_with_the_best_set() -> None:
    d = shortest_prefix(ORDER, 0.5, lambda kept: 3.0 - 0.1 * len(kept))
    assert not d.within and d.kept == ORDER and d.damage == pytest.approx(2.0)


def test_prune_drops_an_early_group_that_was_not_needed() -> None:
    from attn_deploy.calib.search import Decision, prune

    need = {"g1"}  # g0 ranked first but harmless; g1 is what matters
    calls: list[list[str]] = []

    def measure(kept: list[str]) -> float:
        calls.append(kept)
        return 0.3 if need <= set(kept) else 1.0

    found = shortest_prefix(ORDER, 0.5, measure)
    assert found.kept == ["g0", "g1"]
    d = prune(found, 0.5, measure)
    assert d.within and d.kept == ["g1"] and d.damage == 0.3 and calls[-1] == ["g1"]
    assert prune(Decision(["g0", "g1"], 0.3, True), 0.5, measure, more=lambda: False).kept == ["g0", "g1"]
    assert prune(Decision(ORDER, 2.0, False), 0.5, measure).kept == ORDER  # nothing within: nothing to prune


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, onnx.ModelProto, np.ndarray]:
    net = create_model("yolov5n-ca", nc=3)
    src = tmp_path_factory.mktemp("surgery") / "m.onnx"
    src.write_bytes(torch_to_onnx(net, ExportSpec((128, 128), 1)))
    images = np.random.default_rng(0).random((4, 3, 128, 128), dtype=np.float32)
    return net, src, onnx.load_from_string(quantize_int8(src, images, "max")), images


def scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: inits[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("layer", [9, 17, 25])  # attention, a Concat, Detect
def test_surgery_removes_exactly_the_groups_pairs(quantized, layer: int) -> None:
    net, src, naive, _ = quantized
    group = set(layer_nodes(onnx.load(src))[layer])
    edited = keep_out(naive, group)
    before, after = quantized_inputs(naive), quantized_inputs(edited)
    assert {(t, n) for t, n in before if n in group} and after == {(t, n) for t, n in before if n not in group}
    # a pair goes only when none of its readers is left quantized; everything else is as it was
    pairs_left = len({t for t, _ in after})
    assert sum(n.op_type == "QuantizeLinear" for n in edited.graph.node) == pairs_left
    others = lambda m: [n for n in m.graph.node if n.op_type not in QDQ and n.name not in group]  # noqa: E731
    assert [n.SerializeToString() for n in others(edited)] == [n.SerializeToString() for n in others(naive)]
    assert all(scales(edited)[t].tolist() == scales(naive)[t].tolist() for t in scales(edited))
    onnx.checker.check_model(edited)
    assert lint_onnx(edited).passed
    rows = model_rows(net)
    assert find_boundaries(edited, rows) == find_boundaries(naive, rows)


@pytest.mark.parametrize("layer", [9, 25])
def test_surgery_equals_model_optimizers_own_exclusion(quantized, layer: int) -> None:
    _, src, naive, images = quantized
    group = layer_nodes(onnx.load(src))[layer]
    edited = keep_out(naive, group)
    again = onnx.load_from_string(quantize_int8(src, images, "max", exclude=group))
    assert quantized_inputs(edited) == quantized_inputs(again)
    assert {t: s.tolist() for t, s in scales(edited).items()} == {t: s.tolist() for t, s in scales(again).items()}
    feed = {"images": images[:1]}
    a = OnnxrtRunner(edited.SerializeToString()).run(feed)["output0"]
    b = OnnxrtRunner(again.SerializeToString()).run(feed)["output0"]
    assert np.array_equal(a, b)


def test_ranking_equals_the_local_errors_of_per_block_parity(quantized) -> None:
    net, src, naive, images = quantized
    rows = model_rows(net)
    ours = local_errors(onnx.load(src), naive.SerializeToString(), rows, images)
    bounds = find_boundaries(naive, rows)
    theirs = per_block(net, OnnxBlocks(naive, bounds), bounds, [(images[i:i + 1], 1) for i in range(len(images))])
    a = {r.boundary.index: r.local.rel for r in ours.rows}
    b = {r.boundary.index: r.local.rel for r in theirs.rows}
    assert a.keys() == b.keys() == set(range(26))
    assert all(abs(a[i] - b[i]) <= 1e-3 * b[i] + 1e-6 for i in a)  # float32 ONNX vs PyTorch as the reference
    order = [e.layer for e in ranking(ours)]
    assert sorted(order) == list(range(26)) and all(a[i] >= a[j] for i, j in zip(order, order[1:]))
    assert max(a.values()) > 1e-2  # INT8 error, measured


def test_ranking_with_a_layer_table_from_another_graph_is_refused(quantized) -> None:
    from attn_deploy.exporter.layers import LayerRow

    net, src, naive, images = quantized
    rows = [*model_rows(net), LayerRow(26, "Conv", False, (24, 25))]  # a row this graph does not have
    with pytest.raises(ValueError, match="layer 26"):
        local_errors(onnx.load(src), naive.SerializeToString(), rows, images[:1])


def test_an_anchor_free_detect_is_ranked_as_its_outputs_and_two_branches(tmp_path: Path) -> None:
    from attn_deploy import layouts
    from attn_deploy.models.quantized import head_outputs

    net = create_model("yolo11n", nc=3)
    src = tmp_path / "m.onnx"
    src.write_bytes(torch_to_onnx(net, ExportSpec((128, 128), 1)))
    images = np.random.default_rng(0).random((2, 3, 128, 128), dtype=np.float32)
    naive = quantize_int8(src, images, "max")
    report = local_errors(onnx.load(src), naive, model_rows(net), images, layouts.ANCHOR_FREE)
    entries = ranking(report, layouts.ANCHOR_FREE)
    head = [e for e in entries if e.module == "Detect"]
    assert sorted(e.part for e in head) == ["boxes", "outputs", "scores"] and len(entries) == 26
    layer = layer_nodes(onnx.load(src))[23]
    outputs, boxes, scores = (next(e for e in head if e.part == p).nodes(layer) for p in ("outputs", "boxes", "scores"))
    assert set(outputs) | set(boxes) | set(scores) == set(layer)
    assert not set(boxes) & set(scores) and not set(outputs) & (set(boxes) | set(scores))
    assert all("/cv3." in n for n in scores) and any("/dfl/" in n for n in outputs)
    # the output convolutions: each branch's last at three scales, and the DFL's; the same
    # convolutions the quantized PyTorch model keeps in float (models/quantized.head_outputs)
    assert sorted(outputs) == sorted(f"/model.23/{b}.{i}/{b}.{i}.2/Conv" for b in ("cv2", "cv3") for i in range(3)) + [
        "/model.23/dfl/conv/Conv"]
    assert sorted(head_outputs(net)) == sorted(f"model.23.{b}.{i}.2" for b in ("cv2", "cv3") for i in range(3)) + [
        "model.23.dfl.conv"]
    local = report.rows[23].local
    worse = max(local.boxes.rel, local.scores.rel)
    assert {e.part: e.rel for e in head} == {"outputs": worse, "boxes": local.boxes.rel, "scores": local.scores.rel}
    at = [i for i, e in enumerate(entries) if e.module == "Detect"]  # side by side at the Detect's place, outputs first
    assert [entries[i].part for i in at] == ["outputs", "boxes", "scores"] and at == list(range(at[0], at[0] + 3))
    others = [e.rel for e in entries if e.module != "Detect"]
    assert sum(x > local.rel for x in others) == at[0]


def test_entropy_calibration_draws_nothing_on_the_terminal(quantized, capfd: pytest.CaptureFixture[str]) -> None:
    """ONNX Runtime's entropy calibrator draws a tqdm bar per tensor on stderr: a page of them
    under calib's own progress line (found running the benchmark)."""
    _, src, _, images = quantized
    capfd.readouterr()
    q = onnx.load_from_string(quantize_int8(src, images[:2], "entropy"))
    out, err = capfd.readouterr()
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 50
    assert "it/s" not in err and "%|" not in err and out == ""
