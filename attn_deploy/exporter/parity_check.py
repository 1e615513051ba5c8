"""The check ``export`` runs on what it wrote: ONNX Runtime against PyTorch, same inputs,
judged against the float32 noise of the model itself (PyTorch float32 against float64)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from attn_deploy import layouts
from attn_deploy.engines import OnnxrtRunner, TorchRunner
from attn_deploy.exporter.nms import NmsOptions
from attn_deploy.exporter.torch2onnx import INPUT, OUTPUT, ExportSpec
from attn_deploy.models.heads import Detector, head_of, set_end2end
from attn_deploy.parity.nms import multiclass_nms
from attn_deploy.parity.tensor import (
    NOISE_FACTOR, Noise, TensorParity, Tolerances, compare_detections_tensor, compare_part, merge,
)


def parity_cases(spec: ExportSpec, stride: int) -> list[tuple[int, int, int]]:
    """Input shapes (N, H, W): three batches of the exported shape; or, for a dynamic graph,
    two sizes (the exported one and a non-square other) at two batch sizes."""
    h, w = spec.imgsz
    if not spec.dynamic:
        return [(spec.batch, h, w)] * 3
    h2 = max(stride, (h * 3 // 4) // stride * stride)
    w2 = -(-(w * 5 // 4) // stride) * stride
    return [(n, hh, ww) for hh, ww in ((h, w), (h2, w2)) for n in sorted({1, max(2, spec.batch)})]


def random_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Images as the model sees them: float32 in [0, 1], (N, 3, H, W)."""
    return np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)


def measure_noise(net: Detector, h: int, w: int, seed: int = 0, factor: float = NOISE_FACTOR) -> Noise:
    """The float32 noise of ``net`` on one image: max |float32 - float64| of boxes and scores.

    It scales by itself with what the network computes (activation size, depth, box scale,
    trained or random weights), which no fixed tolerance can. One image at batch 1 keeps the
    float64 pass cheap (about 3x a float32 one on the CPU). Every built-in attention module
    and the Detect decode (grid and anchors follow the input's dtype) run in float64.
    An end-to-end top-k is measured before its top-k (the decoded one-to-one output): a
    selection has no noise of its own, only the values it selects.
    """
    x = torch.from_numpy(random_images(1, h, w, seed))
    was_training = net.training
    twin = set_end2end(copy.deepcopy(net), None)
    layout = head_of(twin).layout
    with torch.inference_mode():
        ref32 = twin.eval()(x)
        ref64 = twin.double()(x.double())
    net.train(was_training)
    diff = np.abs(layouts.as_rows(ref32.double().numpy(), layout) - layouts.as_rows(ref64.numpy(), layout))
    return Noise(float(diff[..., :4].max()), float(diff[..., 4:].max()), (1, 3, h, w), factor)


def check_export(
    net: Detector, plain: bytes, spec: ExportSpec, tol: Tolerances | None = None,
    nms: NmsOptions | None = None, final: bytes | None = None,
) -> TensorParity:
    """Tensor parity of ``output0``; with an NMS graph, its detections against numpy NMS
    applied to PyTorch's output of the same images.

    Without ``tol``, the tolerances are ``NOISE_FACTOR`` times the model's measured float32
    noise (``Tolerances()`` is the floor); an explicit ``tol`` is used as given. Either way
    each part carries the noise, so a failure says how many times the noise it is.
    """
    cases = parity_cases(spec, int(net.stride.max()))
    layout = head_of(net).layout
    noise = measure_noise(net, cases[0][1], cases[0][2])
    tol = tol if tol is not None else noise.tolerances()
    result = TensorParity(cases=[[n, 3, h, w] for n, h, w in cases], noise=noise)
    per_part: dict[str, list[Any]] = {}
    torch_run, ort_run = TorchRunner(net), OnnxrtRunner(plain)
    e2e = OnnxrtRunner(final) if nms is not None and final is not None else None
    nms_ok = e2e_ok = True
    for seed, (n, h, w) in enumerate(cases):
        feed = {INPUT: random_images(n, h, w, seed)}
        ref, cand = torch_run.run(feed)[OUTPUT], ort_run.run(feed)[OUTPUT]
        if layout == layouts.END2END:  # a ranking: paired by content, ties may come in either order
            paired, same = pair_detections(end2end_as_nms(ref), end2end_as_nms(cand), tol)
            for key, (a, b) in paired.items():
                s = compare_part(f"{OUTPUT}.{key.removeprefix('det_')}", a, b, tol, noise)
                per_part.setdefault(s.name, []).append(s)
            e2e_ok &= same
            continue
        ref, cand = layouts.as_rows(ref, layout), layouts.as_rows(cand, layout)
        for s in compare_detections_tensor(OUTPUT, ref, cand, tol, noise):
            per_part.setdefault(s.name, []).append(s)
        if e2e is not None:
            got, want = e2e.run(feed), reference_nms(ref, nms)
            paired, same = pair_detections(want, got, tol)
            for key, (a, b) in paired.items():
                s = compare_part(key, a, b, tol, noise)
                per_part.setdefault(s.name, []).append(s)
            nms_ok &= same
    result.stats = [merge(v) for v in per_part.values()]
    if not noise.sane():
        result.checks["float32 noise: PyTorch float32 within 0.01 of float64 (scores) and 1% of the image (boxes)"] = False
    if e2e is not None:
        result.checks["nms: same detections and classes"] = nms_ok
    if layout == layouts.END2END:
        result.checks["end-to-end top-k: same detections and classes"] = e2e_ok
    return result


def pair_detections(
    want: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerances
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], bool]:
    """Pair each reference detection with a candidate of the same class and box.

    Detections with equal scores may come out in either order (each runtime sorts its own
    way), so they are paired by content, not by position; and where equal scores straddle the
    top-K cut, either side may keep either one, so an unpaired detection scored like the
    last one kept is no disagreement. Returns the paired boxes and scores and whether both
    sides hold the same detections.
    """
    pairs_b, pairs_s = ([], []), ([], [])
    same = bool(np.array_equal(want["num_dets"], got["num_dets"]))
    for i, (n,) in enumerate(want["num_dets"]):
        m = int(got["num_dets"][i, 0])
        free = list(range(m))
        for j in range(int(n)):
            box, cls = want["det_boxes"][i, j], want["det_classes"][i, j]
            hit = next((k for k in free if got["det_classes"][i, k] == cls and np.allclose(
                got["det_boxes"][i, k], box, atol=tol.box_atol, rtol=tol.box_rtol)), None)
            if hit is None:
                cut = want["det_scores"][i, int(n) - 1]
                same &= bool(int(n) == want["det_scores"].shape[1] and abs(want["det_scores"][i, j] - cut) <= tol.score_atol)
                continue
            free.remove(hit)
            for acc, a, b in ((pairs_b, box, got["det_boxes"][i, hit]),
                              (pairs_s, want["det_scores"][i, j], got["det_scores"][i, hit])):
                acc[0].append(a)
                acc[1].append(b)
    as_arrays = lambda acc, shape: tuple(np.asarray(x, np.float32).reshape(shape) for x in acc)  # noqa: E731
    return {"det_boxes": as_arrays(pairs_b, (-1, 4)), "det_scores": as_arrays(pairs_s, (-1,))}, same


def end2end_as_nms(pred: np.ndarray) -> dict[str, np.ndarray]:
    """An end-to-end (N, K, 6) output as the four NMS outputs (every row counts), for pairing."""
    n, k, _ = pred.shape
    return {"num_dets": np.full((n, 1), k, np.int32), "det_boxes": pred[..., :4],
            "det_scores": pred[..., 4], "det_classes": pred[..., 5].round().astype(np.int32)}


def reference_nms(pred: np.ndarray, opts: NmsOptions) -> dict[str, np.ndarray]:
    """numpy NMS of a decoded batch of (N, A, 5 + nc) rows (``layouts.as_rows``), padded into
    the end-to-end graph's four outputs."""
    n, a, no = pred.shape
    k = min(opts.topk, a * (no - 5))
    out = {
        "num_dets": np.zeros((n, 1), np.int32), "det_boxes": np.zeros((n, k, 4), np.float32),
        "det_scores": np.zeros((n, k), np.float32), "det_classes": np.full((n, k), -1, np.int32),
    }
    for i in range(n):
        d = multiclass_nms(pred[i], opts.iou_thres, opts.conf_thres, k)
        m = len(d)
        out["num_dets"][i, 0] = m
        out["det_boxes"][i, :m], out["det_scores"][i, :m], out["det_classes"][i, :m] = d.boxes, d.scores, d.classes
    return out
