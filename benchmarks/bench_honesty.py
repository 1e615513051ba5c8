"""Is the bench harness honest? Its ONNX Runtime median against a plain perf_counter loop
around session.run, in the same process, interleaved in rounds so both see the same noise.

    python benchmarks/bench_honesty.py [--model yolov5n-ca] [--imgsz 320] [--rounds 10]

Prints each round's two medians and the ratio harness / plain; a ratio near 1 (within the
round-to-round spread of the plain loop itself) says the harness adds nothing measurable.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from attn_deploy.engines.bench import BenchOptions, measure
from attn_deploy.engines.workloads import OrtWorkload
from attn_deploy.exporter.torch2onnx import ExportSpec, torch_to_onnx
from attn_deploy.models import load_model


def plain_median(session, feed: dict[str, np.ndarray], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="yolov5n-ca")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=30)
    args = ap.parse_args()
    size = (args.imgsz, args.imgsz)
    data = torch_to_onnx(load_model(args.model), ExportSpec(size, 1))
    w = OrtWorkload(data, args.model, 1, size)
    w.setup()
    session, feed = w._state["session"], w._state["feed"]
    plain_median(session, feed, 20)  # warm-up
    ratios, plains = [], []
    for r in range(args.rounds):
        harness = measure(OrtWorkload(data, args.model, 1, size), BenchOptions(0.5, args.iterations)).latency.median
        plain = plain_median(session, feed, args.iterations)
        ratios.append(harness / plain)
        plains.append(plain)
        print(f"round {r + 1:2d}: harness median {harness:7.3f} ms   plain loop {plain:7.3f} ms   ratio {harness / plain:.3f}")
    spread = (max(plains) - min(plains)) / statistics.median(plains)
    print(f"median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"the plain loop's own spread across rounds: {spread:.1%}")


if __name__ == "__main__":
    main()
