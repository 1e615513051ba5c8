"""NMS against a plain reference, the matcher and the gates on constructed cases, mAP from
pycocotools on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from attn_deploy.parity.check import Gates, ParityResult
from attn_deploy.parity.coco import CocoEvaluator, MapResult
from attn_deploy.parity.match import Agreement, match_detections
from attn_deploy.parity.nms import Detections, multiclass_nms


def plain_iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def plain_nms(pred: np.ndarray, iou_thres: float, conf_thres: float) -> set[tuple[int, int]]:
    """(box index, class) pairs kept, written the obvious way: per class, best first, keep a
    box unless it overlaps a kept one by more than the threshold."""
    kept = set()
    for c in range(pred.shape[1] - 5):
        scores = [(float(p[4] * p[5 + c]), i) for i, p in enumerate(pred) if p[4] * p[5 + c] > conf_thres]
        chosen: list[list[float]] = []
        for _, i in sorted(scores, reverse=True):
            x, y, w, h = pred[i, :4].tolist()
            box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
            if all(plain_iou(box, k) <= iou_thres for k in chosen):
                chosen.append(box)
                kept.add((i, c))
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_the_plain_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, nc = 300, 4
    pred = np.concatenate([rng.uniform(0, 200, (n, 2)), rng.uniform(5, 60, (n, 2)),
                           rng.uniform(0, 1, (n, 1 + nc))], 1).astype(np.float32)
    d = multiclass_nms(pred, iou_thres=0.45, conf_thres=0.2, topk=10_000)
    xyxy = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], 1)
    got = set()
    for box, cls in zip(d.boxes, d.classes):
        (i,) = np.nonzero((np.abs(xyxy - box) < 1e-4).all(1))[0][:1]
        got.add((int(i), int(cls)))
    assert got == plain_nms(pred, 0.45, 0.2) and len(got) > 20
    assert np.all(np.diff(d.scores) <= 0)


def dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int64))


def test_identical_detections_all_match() -> None:
    a = dets([[0, 0, 10, 10], [20, 20, 40, 50]], [0.9, 0.5], [0, 1])
    m = match_detections(a, a)
    assert sorted(m.pairs) == [(0, 0), (1, 1)] and not m.missed and not m.extra


def test_iou_below_threshold_is_a_miss_and_an_extra() -> None:
    ref = dets([[0, 0, 100, 100]], [0.9], [0])
    shifted = dets([[0, 0, 100, 88]], [0.9], [0])  # IoU 0.88
    m = match_detections(ref, shifted, iou_thres=0.9)
    assert m.pairs == [] and m.missed == [0] and m.extra == [0]
    assert match_detections(ref, shifted, iou_thres=0.85).pairs == [(0, 0)]


def test_class_must_agree() -> None:
    m = match_detections(dets([[0, 0, 10, 10]], [0.9], [0]), dets([[0, 0, 10, 10]], [0.9], [2]))
    assert m.missed == [0] and m.extra == [0]


def test_greedy_by_reference_score_takes_the_best_overlap() -> None:
    ref = dets([[0, 0, 100, 100], [0, 0, 100, 97]], [0.6, 0.9], [0, 0])
    cand = dets([[0, 0, 100, 97]], [0.9], [0])
    m = match_detections(ref, cand)
    assert m.pairs == [(1, 0)] and m.missed == [0]  # the higher-scored reference goes first


def test_agreement_counts_and_errors() -> None:
    ag = Agreement()
    ref = dets([[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], [0.9, 0.8, 0.7], [0, 0, 1])
    cand = dets([[0.5, 0, 10, 10], [50, 50, 60, 60], [100, 100, 120, 120]], [0.88, 0.8, 0.3], [0, 0, 1])
    ag.add(ref, cand)
    assert (ag.matched, ag.missed, ag.extra) == (2, 1, 1)
    assert ag.agreement == pytest.approx(2 / 4)
    d = ag.to_dict()
    assert d["box_error_px"]["max"] == pytest.approx(0.5) and d["score_error"]["max"] == pytest.approx(0.02, abs=1e-6)
    assert Agreement().agreement == 1.0  # nothing found on either side is agreement


def result(agreement: tuple[int, int, int], maps: tuple[float, float] | None) -> ParityResult:
    r = ParityResult("cand.onnx", "data", (320, 320), Gates(min_agreement=0.95, max_map_drop=0.5))
    r.detections.matched, r.detections.missed, r.detections.extra = agreement
    if maps:
        r.map_reference, r.map_candidate = MapResult(0.9, maps[0], 10, 10), MapResult(0.9, maps[1], 10, 10)
    return r


def test_gates() -> None:
    assert result((95, 3, 2), (0.600, 0.596)).passed  # agreement 0.95, drop 0.4 points
    assert result((100, 0, 0), None).passed  # no labels: the mAP gate does not apply
    low = result((94, 3, 3), None)
    assert not low and low.failures() == ["detection agreement 0.9400 < 0.95"]
    drop = result((100, 0, 0), (0.600, 0.594))
    assert not drop and drop.map_drop == pytest.approx(0.6) and "mAP50-95 drop 0.60 points > 0.5" in drop.failures()[0]
    assert result((100, 0, 0), (0.600, 0.650)).passed  # a candidate that scores higher is no failure


def labels_and_boxes(rng: np.random.Generator, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    xyxy = np.sort(rng.uniform(0, 1, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]] * [w, h, w, h]
    xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2] + 8)
    lab = np.stack([rng.integers(0, 3, n), (xyxy[:, 0] + xyxy[:, 2]) / 2 / w, (xyxy[:, 1] + xyxy[:, 3]) / 2 / h,
                    (xyxy[:, 2] - xyxy[:, 0]) / w, (xyxy[:, 3] - xyxy[:, 1]) / h], 1)
    return lab.astype(np.float32), xyxy.astype(np.float32)


def test_map_of_perfect_and_of_misplaced_detections() -> None:
    rng = np.random.default_rng(0)
    perfect, shifted, empty = CocoEvaluator(3), CocoEvaluator(3), CocoEvaluator(3)
    for _ in range(5):
        lab, xyxy = labels_and_boxes(rng, 6, 300, 400)
        classes = lab[:, 0].astype(np.int64)
        perfect.add((300, 400), lab, dets(xyxy.tolist(), [0.9] * 6, classes.tolist()))
        off = xyxy + np.c_[xyxy[:, 2] - xyxy[:, 0], np.zeros(len(xyxy)), xyxy[:, 2] - xyxy[:, 0], np.zeros(len(xyxy))]
        shifted.add((300, 400), lab, dets(off.tolist(), [0.9] * 6, classes.tolist()))  # moved by a width: IoU 0
        empty.add((300, 400), lab, dets([], [], []))
    p = perfect.evaluate()
    assert p.map50 == pytest.approx(1.0) and p.map50_95 == pytest.approx(1.0) and p.labels == 30
    assert shifted.evaluate().map50 == pytest.approx(0.0) and empty.evaluate().map50_95 == 0.0
