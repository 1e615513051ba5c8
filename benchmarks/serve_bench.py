"""Triton against the bare ONNX Runtime runner, in one run, on this machine.

Not a test: times depend on the machine. For one exported ONNX (with a dynamic batch axis),
writes a model repository (the detector served by the python backend with ONNX Runtime
inside, as the pytriton wheel's server has no onnxruntime backend; plus the ``--ensemble``
steps), starts a real ``tritonserver`` from the nvidia-pytriton wheel, and times, over HTTP
at each concurrency: the detector alone (a letterboxed float tensor in, the raw head out) and
the whole ensemble (a JPEG in, detections in original pixels out). The baseline is the bare
ONNX Runtime runner on the same file, batch 1, measured before and after the server runs
(its mean is the baseline: the two say how steady the machine was). Prints requests per
second, p50 and p99 latency and the throughput ratio to the baseline.

    python benchmarks/serve_bench.py MODEL.onnx --env .venv-triton [--duration 5] [--concurrency 1 4 16]
        [--markdown FILE.md]

``--markdown FILE.md`` also writes the table with the date, versions (the server's and the python
backend environment's ONNX Runtime among them), machine and its load (``benchmarks/stamp.py``):
the documentation's results page includes it as it is.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import urllib.request
from pathlib import Path

import cv2
import numpy as np
from stamp import Stamp

from attn_deploy.engines.bench import BenchOptions, measure
from attn_deploy.engines.workloads import workload_for
from attn_deploy.serve.client import ServerLoad
from attn_deploy.serve.client import measure as measure_server
from attn_deploy.serve.local import LocalTriton
from attn_deploy.serve.repository import ServeOptions, write_repository
from attn_deploy.sidecar import read_sidecar


def server_version(http: str) -> str:
    """``tritonserver VERSION`` from the server's own metadata."""
    with urllib.request.urlopen(f"http://{http}/v2", timeout=5) as r:
        return f"tritonserver {json.load(r).get('version', '?')}"


def env_version(env: Path, package: str = "onnxruntime") -> str:
    """The version of ``package`` in the python backend's environment (it runs the model there)."""
    from importlib.metadata import distributions

    found = [d.version for d in distributions(name=package, path=[str(p) for p in env.glob("lib/python*/site-packages")])]
    return f"{package} {found[0]} in `{env.name}`" if found else f"{package} (not found in `{env.name}`)"


def markdown_table(args: argparse.Namespace, imgsz: tuple[int, int], bare: tuple[float, float], p50: float,
                   rows: list, stamp: Stamp, more: list[str]) -> str:
    """The rows as Markdown under their stamp and the bare runner's before/after figures."""
    baseline = sum(bare) / 2
    setting = (f"with `{args.onnx.name}` at {imgsz[0]}x{imgsz[1]}, {args.duration:g} s per point over HTTP, "
               f"max queue delay {args.max_queue_delay_us} us")
    lines = [stamp.line(setting, more), "",
             (f"The bare ONNX Runtime runner, batch 1: {bare[0]:.1f} images/s before the server ran and "
              f"{bare[1]:.1f} after (baseline {baseline:.1f}); p50 {p50:.1f} ms."), "",
             ("`det`: the detector alone (a letterboxed float tensor in, the raw head out); `det_e2e`: the "
              "ensemble (a JPEG in, detections in the image's pixels out); x bare: requests/s over the baseline."), "",
             "| model | concurrency | requests/s | p50 ms | p99 ms | x bare |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {model} | {c} | {r.throughput:.1f} | {r.latency.median:.1f} | {r.latency.p99:.1f} | "
              f"{r.throughput / baseline:.2f} |" for model, c, r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", type=Path)
    ap.add_argument("--env", type=Path, required=True, help="the python backend's execution environment")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-queue-delay-us", type=int, default=2000)
    ap.add_argument("--markdown", type=Path, help="also write the table, stamped, to this Markdown file")
    args = ap.parse_args()
    stamp = Stamp(__file__, ("attn-deploy", "onnxruntime", "nvidia-pytriton", "tritonclient"))

    side = read_sidecar(args.onnx) or {}
    imgsz = tuple(side.get("imgsz") or (640, 640))  # what the ensemble letterboxes to
    base = workload_for(str(args.onnx), "ort", None, 1, imgsz)
    opts = BenchOptions(1.0, None, args.duration)
    before = measure(base, opts)
    rng = np.random.default_rng(0)
    _, jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (*imgsz, 3), dtype=np.uint8))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_repository(args.onnx, ServeOptions(repo, name="det", max_batch=16, ensemble=True, backend="python",
                                                 python_env=str(args.env), max_queue_delay_us=args.max_queue_delay_us))
        with LocalTriton(repo) as server:
            more = [server_version(server.http), env_version(args.env)]
            for model in ("det", "det_e2e"):
                for c in args.concurrency:
                    load = ServerLoad(server.http, model, "http", c, 1, imgsz, jpeg.tobytes())
                    rows.append((model, c, measure_server(load, 1.0, args.duration)))
    after = measure(base, opts)
    baseline = (before.throughput + after.throughput) / 2
    print(f"bare ONNX Runtime, batch 1, {imgsz[0]}x{imgsz[1]}: {before.throughput:.1f} / {after.throughput:.1f} "
          f"images/s before / after (baseline {baseline:.1f}); p50 {before.latency.median:.1f} ms")
    print(f"{'model':<10} {'conc':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'x bare':>7}")
    for model, c, r in rows:
        print(f"{model:<10} {c:>4} {r.throughput:>7.1f} {r.latency.median:>8.1f} {r.latency.p99:>8.1f} "
              f"{r.throughput / baseline:>7.2f}")
    if args.markdown:
        args.markdown.write_text(markdown_table(args, imgsz, (before.throughput, after.throughput),
                                                before.latency.median, rows, stamp, more))


if __name__ == "__main__":
    main()
