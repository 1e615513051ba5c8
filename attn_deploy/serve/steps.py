"""The python-backend steps of a served detector, and the detector's stand-in.

Triton copies nothing of ours: ``serve`` writes, per step, a ``model.py`` of two lines that
imports one of the classes below, so the step runs this module's code, in whatever Python
the server's python backend uses (``EXECUTION_ENV_PATH``: numpy, opencv, onnxruntime and
attn-deploy installed; torch is not needed). One way to do each thing: the preprocessing is
``parity``'s own decode, letterbox and tensor layout (``data/loader.py``), the
postprocessing its own NMS and box mapping (``parity/postprocess.py``).

Each class is a ``TritonPythonModel``: ``initialize(args)`` reads the step's parameters from
its config, ``execute(requests)`` answers each request. Under dynamic batching one call gets
several requests: the detector stand-in runs them as one batch and splits the result back.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

PLACEMENT = "PLACEMENT"  # per image: original h, w, the letterbox ratio, pad w, pad h
DETECTIONS = "DETECTIONS"  # per image: rows x1 y1 x2 y2 score class, original pixels; class -1 pads


def prepare(image: np.ndarray, encoded: bool, imgsz: tuple[int, int], dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """One image (encoded bytes as a uint8 vector, or HxWx3 uint8 BGR) -> the network input
    (3, H, W) and its placement, exactly as parity prepares it."""
    import cv2

    from attn_deploy.data.letterbox import letterbox
    from attn_deploy.data.loader import to_input

    bgr = cv2.imdecode(np.asarray(image, np.uint8).reshape(-1), cv2.IMREAD_COLOR) if encoded else np.asarray(image, np.uint8)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        raise ValueError("not a decodable image" if encoded else f"an image must be HxWx3 uint8, not {list(np.shape(image))}")
    boxed, placed = letterbox(bgr, imgsz)
    where = np.array([*placed.shape, placed.ratio, *placed.pad], np.float32)
    return to_input(boxed).astype(dtype), where


def detections(outputs: list[np.ndarray], placement: np.ndarray, layout: str, nms: dict[str, Any]) -> np.ndarray:
    """One image's model outputs (batch of one) -> (K, 6) rows in original-image pixels, the
    way parity reads them (NMS for raw heads; an NMS or end-to-end graph's own rows)."""
    from attn_deploy import layouts
    from attn_deploy.data.letterbox import Letterbox, scale_boxes
    from attn_deploy.exporter.nms import NmsOptions
    from attn_deploy.parity.postprocess import postprocess

    h, w, ratio, dw, dh = (float(v) for v in placement)
    placed = Letterbox((int(h), int(w)), ratio, (dw, dh))
    if layout == layouts.NMS:  # num_dets, det_boxes, det_scores, det_classes
        n = int(np.asarray(outputs[0]).reshape(-1)[0])
        boxes = scale_boxes(np.asarray(outputs[1][0, :n], np.float32), placed)
        return np.concatenate((boxes, outputs[2][0, :n, None], outputs[3][0, :n, None]), 1).astype(np.float32)
    [d] = postprocess(np.asarray(outputs[0]), [placed], NmsOptions(**nms), layout)
    return np.concatenate((d.boxes, d.scores[:, None], d.classes[:, None]), 1).astype(np.float32)


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Per-image (K, 6) rows as one (B, max K, 6) array; short ones filled with class -1 rows."""
    k = max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), k, 6), np.float32)
    out[..., 5] = -1
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _params(args: dict[str, Any]) -> dict[str, str]:
    cfg = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}


def _error_response(pb: Any, e: Exception) -> Any:
    return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(e).__name__}: {e}"))


class Preprocess:
    """IMAGE (encoded bytes or raw HxWx3) -> images (the network input) and PLACEMENT."""

    def initialize(self, args: dict[str, Any]) -> None:
        p = _params(args)
        self.encoded = p["input"] == "encoded"
        self.imgsz = tuple(int(v) for v in p["imgsz"].split(","))
        self.input_name, self.dtype = p["network_input"], p["dtype"]

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb

        out = []
        for r in requests:
            try:
                images = pb.get_input_tensor_by_name(r, "IMAGE").as_numpy()
                prepared = [prepare(img, self.encoded, self.imgsz, self.dtype) for img in images]
                out.append(pb.InferenceResponse([
                    pb.Tensor(self.input_name, np.stack([a for a, _ in prepared])),
                    pb.Tensor(PLACEMENT, np.stack([b for _, b in prepared]))]))
            except Exception as e:  # noqa: BLE001 - a bad image fails its own request, not the server
                out.append(_error_response(pb, e))
        return out


class Postprocess:
    """The detector's outputs and PLACEMENT -> DETECTIONS in original-image pixels."""

    def initialize(self, args: dict[str, Any]) -> None:
        p = _params(args)
        self.outputs = p["network_outputs"].split(",")
        self.layout, self.nms = p["layout"], json.loads(p["nms"])

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb

        out = []
        for r in requests:
            try:
                arrays = [pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.outputs]
                placements = pb.get_input_tensor_by_name(r, PLACEMENT).as_numpy()
                rows = [detections([a[i:i + 1] for a in arrays], placements[i], self.layout, self.nms)
                        for i in range(len(placements))]
                out.append(pb.InferenceResponse([pb.Tensor(DETECTIONS, padded(rows))]))
            except Exception as e:  # noqa: BLE001
                out.append(_error_response(pb, e))
        return out


class OnnxDetector:
    """The stand-in for Triton's onnxruntime backend where a server has only the python one
    (NVIDIA's pytriton wheel): model.onnx in ONNX Runtime, every batched request in one run."""

    def initialize(self, args: dict[str, Any]) -> None:
        import os

        import onnxruntime as ort

        folder = os.path.join(args["model_repository"], args["model_version"])
        self.session = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb

        feeds = [[pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs] for r in requests]
        sizes = [len(f[0]) for f in feeds]
        joined = {n: np.concatenate([f[k] for f in feeds]) for k, n in enumerate(self.inputs)}
        results = self.session.run(self.outputs, joined)  # one run for the whole dynamic batch
        out, start = [], 0
        for n in sizes:
            out.append(pb.InferenceResponse([pb.Tensor(name, np.ascontiguousarray(res[start:start + n]))
                                             for name, res in zip(self.outputs, results)]))
            start += n
        return out
