"""Export every yolov5s-{key} at 640 and time it against PyTorch, in one run.

Not a test: timings depend on the machine. Prints, per model: export time (export, slim,
lint and parity), node count, ONNX Runtime CPU median latency, PyTorch eager median latency
measured in the same run with the same inputs (ratio ORT/torch), and the attention block's
latency and GFLOPs overheads relative to plain yolov5s. Runs are interleaved (this model in
ORT, in PyTorch, plain yolov5s in ORT, again ...) so every figure sees the same machine noise.

    python benchmarks/export_bench.py [--imgsz 640] [--runs 15] [--keys se,ca]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attn_deploy.engines import OnnxrtRunner
from attn_deploy.exporter import ExportSpec, export_model
from attn_deploy.models import create_model, list_attention, model_info


def latencies(
    model: torch.nn.Module, onnx_path: Path, base: OnnxrtRunner, x: np.ndarray, runs: int
) -> tuple[float, float, float]:
    """Median ms of: this model in ORT, this model in PyTorch, plain yolov5s in ORT, interleaved."""
    ort = OnnxrtRunner(onnx_path, spinning=False)
    feed = {"images": x}
    xt = torch.from_numpy(x)
    steps = (lambda: ort.run(feed), lambda: _torch(model, xt), lambda: base.run(feed))
    for step in steps:  # warm-up
        step()
    times: list[list[float]] = [[], [], []]
    for r in range(runs):
        for j in range(3):  # rotate the order each round: no step always follows the same one
            k = (j + r) % 3
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    return tuple(statistics.median(t) * 1e3 for t in times)  # type: ignore[return-value]


def _torch(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--keys", default=",".join(list_attention()))
    args = ap.parse_args()
    x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    rows = []
    spec = ExportSpec((args.imgsz, args.imgsz))
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "base.onnx"
        export_model(create_model("yolov5s"), base_path, spec, check=False)
        base = OnnxrtRunner(base_path, spinning=False)  # two sessions take turns: no busy-waiting
        base_gflops = model_info(create_model("yolov5s"), spec.imgsz).gflops
        for key in ["none", *args.keys.split(",")]:
            name = "yolov5s" if key == "none" else f"yolov5s-{key}"
            net = create_model(name)
            t0 = time.perf_counter()
            res = export_model(net, Path(tmp) / f"{name}.onnx", spec)
            t_export = time.perf_counter() - t0
            ort_ms, pt_ms, base_ms = latencies(net, Path(tmp) / f"{name}.onnx", base, x, args.runs)
            gflops = model_info(net, spec.imgsz).gflops
            rows.append((name, t_export, res.nodes, ort_ms, pt_ms, ort_ms / base_ms - 1, gflops, res.passed))
            print(f"  measured {name}", flush=True)
    print(f"\nyolov5s-KEY at {args.imgsz}x{args.imgsz}, batch 1, CPU ({torch.get_num_threads()} threads), "
          f"median of {args.runs} interleaved runs")
    print(f"{'model':<15}{'export s':>9}{'nodes':>7}{'ORT ms':>9}{'torch ms':>10}{'ORT/torch':>10}"
          f"{'+latency':>10}{'GFLOPs':>8}{'+GFLOPs':>9}  parity")
    for name, t_export, nodes, ort_ms, pt_ms, overhead, gflops, ok in rows:
        print(f"{name:<15}{t_export:>9.1f}{nodes:>7}{ort_ms:>9.1f}{pt_ms:>10.1f}{ort_ms / pt_ms:>10.2f}"
              f"{overhead * 100:>9.1f}%{gflops:>8.2f}{(gflops / base_gflops - 1) * 100:>8.1f}%  {'pass' if ok else 'FAIL'}")
    print("+latency: ORT latency over plain yolov5s's ORT latency (a second session, interleaved); the")
    print("yolov5s row compares two sessions of the same graph, so its +latency is the noise floor;")
    print("GFLOPs count convolutions and matrix products (elementwise gates are not counted).")


if __name__ == "__main__":
    main()
