"""Talking to a Triton server: detections from a served ensemble, and ``bench --triton``.

``detect`` is the client call the serving guide (docs/howto/serve.md) shows: one encoded image (or a raw HxWx3 uint8 BGR
array) to ``NAME_e2e``, (K, 6) rows back, x1 y1 x2 y2 score class in the image's pixels.
``measure`` times requests to any served model over HTTP or gRPC at a fixed concurrency
(closed loop: each of N threads sends its next request when the last one is answered) and
reports what ``bench`` reports: throughput and latency percentiles, per request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from attn_deploy.errors import UserError, one_line


def _module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as e:
        raise UserError("talking to Triton needs tritonclient: pip install 'tritonclient[http,grpc]'") from e
    return client


def connect(url: str, protocol: str = "http") -> Any:
    """A client for ``host:port``; one line (exit 2) when no server answers there."""
    if protocol not in ("http", "grpc"):
        raise UserError(f"protocol must be http or grpc, not {protocol!r}")
    address = url.split("://", 1)[-1].rstrip("/")
    try:
        client = _module(protocol).InferenceServerClient(address)
        live = client.is_server_live()
    except Exception as e:  # noqa: BLE001 - tritonclient raises its own and socket errors alike
        raise UserError(f"no Triton server answers at {address} ({protocol}): {one_line(str(e), 80)}") from None
    if not live:
        raise UserError(f"the Triton server at {address} is not live")
    return client


def _inputs(protocol: str, arrays: dict[str, np.ndarray]) -> list[Any]:
    from tritonclient.utils import np_to_triton_dtype

    mod = _module(protocol)
    out = []
    for name, a in arrays.items():
        t = mod.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
        t.set_data_from_numpy(a)
        out.append(t)
    return out


def detect(client: Any, model: str, image: bytes | np.ndarray, protocol: str = "http") -> np.ndarray:
    """One image through ``model`` (an ``attn-deploy serve --ensemble`` NAME_e2e): its (K, 6)
    detections, x1 y1 x2 y2 score class, in the image's own pixels."""
    data = np.frombuffer(image, np.uint8) if isinstance(image, (bytes, bytearray)) else np.asarray(image, np.uint8)
    result = client.infer(model, _inputs(protocol, {"IMAGE": data[None]}))
    rows = result.as_numpy("DETECTIONS")[0]
    return rows[rows[:, 5] >= 0]


def example_inputs(client: Any, model: str, protocol: str, imgsz: tuple[int, int], image: bytes | None = None,
                   batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs for ``model`` as its metadata describes them: an encoded image (given, or a grey
    frame) for an ensemble's IMAGE, random network inputs (dynamic H, W at ``imgsz``) otherwise."""
    import cv2
    from tritonclient.utils import triton_to_np_dtype

    try:
        meta = client.get_model_metadata(model)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"the server has no model {model!r} ready: {one_line(str(e), 80)}") from None
    specs = meta["inputs"] if isinstance(meta, dict) else [
        {"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in meta.inputs]
    out = {}
    rng = np.random.default_rng(0)
    for s in specs:
        dtype = triton_to_np_dtype(s["datatype"])
        if s["name"] == "IMAGE" and dtype == np.uint8:
            if image is None:
                _, enc = cv2.imencode(".jpg", np.full((*imgsz, 3), 114, np.uint8))
                image = enc.tobytes()
            data = np.frombuffer(image, np.uint8)
            out[s["name"]] = np.repeat(data[None], batch, 0)
            continue
        dims = [int(d) for d in s["shape"][1:]]
        dims = [imgsz[0] if d < 0 and i == len(dims) - 2 else imgsz[1] if d < 0 else d for i, d in enumerate(dims)]
        out[s["name"]] = rng.random((batch, *dims)).astype(dtype)
    return out


@dataclass(frozen=True)
class ServerLoad:
    url: str
    model: str
    protocol: str = "http"
    concurrency: int = 1
    batch: int = 1
    imgsz: tuple[int, int] = (640, 640)
    image: bytes | None = None

    def check(self) -> None:
        if not 1 <= self.concurrency <= 1024:
            raise UserError(f"--concurrency must be 1 to 1024, not {self.concurrency}")


def measure(load: ServerLoad, warmup_s: float, duration_s: float, iterations: int | None = None) -> Any:
    """Closed-loop requests at ``load.concurrency`` for ``duration_s`` (or until ``iterations``
    answers): a BenchResult with per-request latencies and throughput over the wall time."""
    from attn_deploy.engines.bench import BenchResult, LatencyStats

    load.check()
    first = connect(load.url, load.protocol)
    inputs = example_inputs(first, load.model, load.protocol, load.imgsz, load.image, load.batch)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(until: float, record: bool) -> None:
        client = connect(load.url, load.protocol)
        feed = _inputs(load.protocol, inputs)
        while time.perf_counter() < until and not errors:
            if record and iterations is not None and len(latencies) >= iterations:
                return
            start = time.perf_counter()
            try:
                client.infer(load.model, feed)
            except Exception as e:  # noqa: BLE001 - the server's refusal, in one line
                errors.append(one_line(str(e), 120))
                return
            if record:
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)

    def run(seconds: float, record: bool) -> float:
        until = time.perf_counter() + seconds
        threads = [threading.Thread(target=worker, args=(until, record)) for _ in range(load.concurrency)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    run(max(warmup_s, 0.01), False)
    wall = run(duration_s if iterations is None else 86_400.0, True)
    if errors:
        raise UserError(f"the server refused {load.model}: {errors[0]}")
    label = f"triton {load.model} ({load.protocol}, concurrency {load.concurrency})"
    return BenchResult(label, f"triton-{load.protocol}", "-", load.batch, load.imgsz, load.url,
                       LatencyStats.from_ms(latencies), len(latencies), wall_s=wall)
