"""Our ONNX export against ultralytics' own exporter on the same weights, in one run.

Not a test: timings depend on the machine. Per model, ultralytics builds the network from its
packaged yaml, the weights (BatchNorm statistics included) are drawn from a fixed seed and
``YOLO.save`` writes one checkpoint; then both exporters read that file:

- theirs: ``YOLO(pt).export(format="onnx", imgsz=640, simplify=True, opset=17, dynamic=False)``,
  whose detect output is (1, 4 + nc, anchors) with NMS left to the caller, YOLO26's too
  (its one-to-many branch); ``yolo26n-e2e`` compares the one-to-one top-k instead
  (theirs ``nms=False``, ours ``heads.set_end2end``): (1, 300, 6) in both;
- ours: ``load_model(weights=pt)`` then ``export_model(net, out, ExportSpec(...), check=False)``.

Columns: nodes in each graph; ONNX Runtime CPU median latency of each (one session per graph,
the same options: 2 intra-op threads, default graph optimisation, no spinning; warm-up, then
the sessions take turns, each round starting at the next one); export wall time (median, load
included on both sides: their ``YOLO(pt)``, our ``load_model``; the exporters take turns);
``+checks``: ours with ``check=True`` (TensorRT lint, ONNX Runtime parity, a float64 noise
pass), in the same rotation; max |ours - theirs| of the two graphs' outputs on one random image,
boxes (px) and scores apart. Each ratio is ours/theirs taken round by round, so both figures of
a pair saw the same machine, then the median; for latency also its quartiles, beside those of
a second session of their graph against the first (A/A): the spread two sessions of one graph
show on this machine. A latency ratio inside that spread is no difference. Below 1: ours
faster. Under the table, the op counts that differ.

Exports run torch on one thread by default (``--torch-threads``), both sides alike: on a
shared two-core machine two threads oversubscribe the cores (the same ``torch.onnx.export``
took 11 s with two threads and 1.4 s with one, minutes apart), noise that drowns the ratio.

ultralytics is the reference only (never a dependency of the package). It runs offline here:
``YOLO_OFFLINE=1`` stops its online checks and ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1`` its
``check_requirements`` pip installs; onnxslim must be importable, or its exporter would warn
and keep an unsimplified graph.

    python benchmarks/vs_ultralytics.py [--models yolov8n,yolo26n] [--runs 30] [--export-runs 3]
        [--torch-threads 1] [--json PATH] [--markdown FILE.md]

``--markdown FILE.md`` also writes the table with the date, versions, machine and its load
(``benchmarks/stamp.py``): the documentation's results page includes it as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml
from stamp import Stamp
from torch import nn

from attn_deploy.engines import OnnxrtRunner
from attn_deploy.exporter import ExportSpec, export_model
from attn_deploy.models import load_model
from attn_deploy.models.heads import MAX_DET, set_end2end
from attn_deploy.models.zoo import insert_row

DEFAULT = "yolov8n,yolo11n,yolo12n,yolo26n,yolov8n-cbam,yolo26n-e2e"
THREADS = 2


@dataclass
class Row:
    model: str
    nodes: tuple[int, int] = (0, 0)  # ours, theirs
    latency_ms: tuple[float, float] = (0.0, 0.0)  # medians
    latency_ratio: tuple[float, float, float] = (0.0, 0.0, 0.0)  # ours/theirs per round: median, quartiles
    noise_ratio: tuple[float, float, float] = (0.0, 0.0, 0.0)  # theirs/theirs (a second session): the floor
    export_s: tuple[float, float] = (0.0, 0.0)
    export_ratio: float = 0.0  # ours/theirs per round, median
    export_checked_s: float = 0.0
    checks_passed: bool | None = None
    max_diff: tuple[float, float] = (float("nan"), float("nan"))  # boxes px, scores
    class_mismatches: int | None = None  # the end-to-end layout's class column
    shapes: tuple[list[int], list[int]] = ([], [])
    ops_diff: dict[str, int] = field(default_factory=dict)  # ours - theirs, where they differ
    error: str | None = None  # why ultralytics' side could not be measured


def ultralytics() -> Any:
    """The reference, set up before its first import: offline, no pip installs, its settings
    file in a temporary folder rather than the user's home."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-settings-"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")
    try:
        import onnxslim  # noqa: F401
        import ultralytics as u
        from ultralytics.nn import tasks  # noqa: F401
    except ImportError as e:
        sys.exit(f"vs_ultralytics: {e}; install the reference with pip install --no-deps ultralytics==8.4.190 "
                 "(a plain install replaces torch)")
    return u


@contextmanager
def ultralytics_knows_cbam() -> Iterator[None]:
    """Their yaml parser finds row names among tasks.py's imports, where CBAM is not."""
    from ultralytics.nn import tasks
    from ultralytics.nn.modules import conv

    names = ("CBAM", "ChannelAttention", "SpatialAttention")
    saved = {n: getattr(tasks, n, None) for n in names}
    for n in names:
        setattr(tasks, n, getattr(conv, n))
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                delattr(tasks, n)
            else:
                setattr(tasks, n, v)


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Weights, biases and BatchNorm statistics from a seed, scaled to keep activations finite
    (as tests/test_ultralytics_checkpoints.py draws them)."""
    g = torch.Generator().manual_seed(seed)

    def draw(t: torch.Tensor, scale: float, shift: float = 0.0, uniform: bool = False) -> None:
        drawn = torch.rand(t.shape, generator=g) if uniform else torch.randn(t.shape, generator=g)
        t.copy_(drawn * scale + shift)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                draw(m.weight, 0.5, 0.75, uniform=True)
                draw(m.bias, 0.1)
                draw(m.running_mean, 0.1)
                draw(m.running_var, 0.5, 0.75, uniform=True)
            elif isinstance(m, nn.Conv2d) and m.weight.requires_grad:  # DFL's fixed bins stay
                draw(m.weight, m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    draw(m.bias, 0.5)


def save_checkpoint(name: str, folder: Path) -> Path:
    """``yolov8n[-cbam][-e2e]`` built by ultralytics from its yaml, randomised, saved by YOLO.save."""
    from ultralytics import YOLO
    from ultralytics.nn import tasks

    base = name.split("-")[0]
    cfg = {k: v for k, v in tasks.yaml_model_load(f"{base}.yaml").items() if k != "yaml_file"}
    if "-cbam" in name:
        cfg = insert_row(cfg, 9, [-1, 1, "CBAM", [256]])  # after the last backbone C2f, as the zoo's -KEY rows
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with ultralytics_knows_cbam():
        model = YOLO(str(folder / f"{name}.yaml"), verbose=False)
    randomize(model.model)
    model.save(folder / f"{name}.pt")
    return folder / f"{name}.pt"


def export_theirs(pt: Path, imgsz: int, e2e: bool) -> Path:
    from ultralytics import YOLO

    out = YOLO(str(pt)).export(format="onnx", imgsz=imgsz, simplify=True, opset=17, dynamic=False,
                               nms=False if e2e else None)  # nms=False selects YOLO26's one-to-one head
    return Path(out)


def export_ours(pt: Path, out: Path, imgsz: int, e2e: bool, check: bool) -> bool:
    net = load_model(weights=pt)
    if e2e:
        set_end2end(net, MAX_DET)
    return export_model(net, out, ExportSpec((imgsz, imgsz), 1, opset=17), check=check).passed


def timed_rounds(steps: list[Callable[[], Any]], rounds: int) -> list[list[float]]:
    """Seconds of each step in each round; every round starts at a different step."""
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds):
        for j in range(len(steps)):
            k = (j + r) % len(steps)
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def paired(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """ours/theirs round by round (both saw that round's noise): median, first and third quartile."""
    ratios = [a / b for a, b in zip(ours, theirs)]
    q1, med, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return med, q1, q3


def latencies(
    ours: Path, theirs: Path, x: np.ndarray, runs: int, warmup: int = 5
) -> tuple[list[list[float]], list[np.ndarray]]:
    """Seconds of each graph's runs in ONNX Runtime, interleaved, and each graph's output on ``x``;
    the third session, theirs again, measures how far two sessions of one graph differ here."""
    runners = [OnnxrtRunner(p, threads=THREADS, spinning=False) for p in (ours, theirs, theirs)]
    outs = []
    for runner in runners:
        name = runner.input_names()[0]
        for _ in range(warmup):
            y = runner.run({name: x})
        outs.append(next(iter(y.values())))
    feeds = [{r.input_names()[0]: x} for r in runners]
    steps = [lambda r=r, f=f: r.run(f) for r, f in zip(runners, feeds)]
    return timed_rounds(steps, runs), outs[:2]


def differences(row: Row, ours: np.ndarray, theirs: np.ndarray, e2e: bool) -> None:
    row.shapes = (list(ours.shape), list(theirs.shape))
    if ours.shape != theirs.shape:
        return
    if e2e:  # (N, k, 6): x1 y1 x2 y2 score class; near-tied scores may come in another order
        pairs = [matched(a, b) for a, b in zip(ours, theirs)] + [matched(b, a) for a, b in zip(ours, theirs)]
        row.max_diff = (max(float(np.abs(a[:, :4] - b[:, :4]).max()) for a, b in pairs),
                        max(float(np.abs(a[:, 4] - b[:, 4]).max()) for a, b in pairs))
        row.class_mismatches = sum(int((a[:, 5] != b[:, 5]).sum()) for a, b in pairs[: len(ours)])
    else:  # (N, 4 + nc, anchors)
        row.max_diff = (float(np.abs(ours[:, :4] - theirs[:, :4]).max()),
                        float(np.abs(ours[:, 4:] - theirs[:, 4:]).max()))


def matched(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each detection of ``a`` (k, 6) with its nearest in ``b``: the two top-k as sets."""
    scale = np.array([1, 1, 1, 1, 1e3, 1e6], dtype=np.float32)  # a score or a class apart outweighs pixels
    nearest = (np.abs(a[:, None] - b[None]) * scale).max(-1).argmin(1)
    return a, b[nearest]


def op_counts(path: Path) -> tuple[int, Counter]:
    graph = onnx.load(str(path)).graph
    return len(graph.node), Counter(n.op_type for n in graph.node)


def measure(name: str, folder: Path, args: argparse.Namespace, x: np.ndarray) -> Row:
    row, e2e = Row(name), name.endswith("-e2e")
    pt = save_checkpoint(name, folder)
    ours_path = folder / f"{name}.ours.onnx"
    try:  # the first export of each side warms it up, untimed; theirs fails here if it cannot run
        theirs_path = export_theirs(pt, args.imgsz, e2e)
    except Exception as e:  # noqa: BLE001 - whatever stops ultralytics' exporter is the finding
        row.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return row
    export_ours(pt, ours_path, args.imgsz, e2e, False)
    passed: list[bool] = []
    steps = [lambda: export_ours(pt, ours_path, args.imgsz, e2e, False),
             lambda: export_theirs(pt, args.imgsz, e2e),
             lambda: passed.append(export_ours(pt, folder / f"{name}.checked.onnx", args.imgsz, e2e, True))]
    ours_s, theirs_s, checked_s = timed_rounds(steps, args.export_runs)
    row.export_s = (statistics.median(ours_s), statistics.median(theirs_s))
    row.export_ratio = paired(ours_s, theirs_s)[0]
    row.export_checked_s, row.checks_passed = statistics.median(checked_s), all(passed)
    (n_ours, ops_ours), (n_theirs, ops_theirs) = op_counts(ours_path), op_counts(theirs_path)
    row.nodes = (n_ours, n_theirs)
    row.ops_diff = {op: ops_ours[op] - ops_theirs[op] for op in sorted(ops_ours | ops_theirs)
                    if ops_ours[op] != ops_theirs[op]}
    (t_ours, t_theirs, t_again), (y_ours, y_theirs) = latencies(ours_path, theirs_path, x, args.runs)
    row.latency_ms = (statistics.median(t_ours) * 1e3, statistics.median(t_theirs) * 1e3)
    row.latency_ratio, row.noise_ratio = paired(t_ours, t_theirs), paired(t_again, t_theirs)
    differences(row, y_ours, y_theirs, e2e)
    return row


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\nours vs ultralytics {ultralytics().__version__} at {args.imgsz}x{args.imgsz}, batch 1, opset 17; "
          f"ORT {THREADS} threads, {args.runs} interleaved runs; {args.export_runs} exports, "
          f"torch {args.torch_threads} thread(s)")
    print(f"{'model':<14}{'nodes':>10}{'ORT ms':>14}{'ratio':>7}{'(IQR)':>12}{'A/A IQR':>12}{'export s':>12}{'ratio':>7}"
          f"{'+checks s':>10}{'|d| boxes':>11}{'|d| scores':>11}")
    for r in rows:
        if r.error:
            print(f"{r.model:<14}  ultralytics' exporter failed: {r.error}")
            continue
        (no, nt), (lo, lt), (eo, et), (ratio, q1, q3) = r.nodes, r.latency_ms, r.export_s, r.latency_ratio
        aa = f"{r.noise_ratio[1]:.2f}-{r.noise_ratio[2]:.2f}"
        check = f"{r.export_checked_s:.1f}" + ("" if r.checks_passed else "!")
        print(f"{r.model:<14}{f'{no}/{nt}':>10}{f'{lo:.1f}/{lt:.1f}':>14}{ratio:>7.2f}{f'{q1:.2f}-{q3:.2f}':>12}"
              f"{aa:>12}{f'{eo:.1f}/{et:.1f}':>12}{r.export_ratio:>7.2f}{check:>10}"
              f"{r.max_diff[0]:>11.2e}{r.max_diff[1]:>11.2e}")
    print("nodes, ORT ms (median), export s (median, load included): ours/theirs. ratio: the median of\n"
          "ours/theirs round by round (below 1: ours faster), IQR its quartiles; A/A IQR: the same for a\n"
          "second session of their graph against the first, the noise floor. +checks s: ours with lint,\n"
          "parity and the noise pass ('!': a check failed). |d|: max |ours - theirs| on one random image\n"
          "(-e2e: the two top-300 matched as sets, near-tied scores come in either order).")
    for r in (r for r in rows if not r.error):
        if notes := notes_of(r):
            print(f"  {r.model}: ops ours - theirs: " + "; ".join(notes))


def markdown_table(rows: list[Row], args: argparse.Namespace, stamp: Stamp) -> str:
    """The table as Markdown under its stamp; the op counts that differ as a list below it."""
    setting = (f"at {args.imgsz}x{args.imgsz}, batch 1, opset 17; ONNX Runtime {THREADS} threads, {args.runs} "
               f"interleaved runs; {args.export_runs} exports per exporter, torch {args.torch_threads} thread(s)")
    lines = [stamp.line(setting), "",
             ("| model | nodes ours / theirs | ORT ms ours / theirs | latency ratio (IQR) | A/A IQR "
              "| export s ours / theirs | export ratio | export +checks s | max diff boxes px | max diff scores |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | ultralytics' exporter failed: {r.error.replace('|', '/')} |" + " |" * 8)
            continue
        (no, nt), (lo, lt), (eo, et), (ratio, q1, q3) = r.nodes, r.latency_ms, r.export_s, r.latency_ratio
        check = f"{r.export_checked_s:.1f}" + ("" if r.checks_passed else " (a check failed)")
        lines.append(f"| {r.model} | {no} / {nt} | {lo:.1f} / {lt:.1f} | {ratio:.2f} ({q1:.2f}-{q3:.2f}) | "
                     f"{r.noise_ratio[1]:.2f}-{r.noise_ratio[2]:.2f} | {eo:.1f} / {et:.1f} | {r.export_ratio:.2f} | "
                     f"{check} | {r.max_diff[0]:.2e} | {r.max_diff[1]:.2e} |")
    notes = [f"- {r.model}: " + "; ".join(n) for r in rows if not r.error and (n := notes_of(r))]
    return "\n".join(lines + (["", "Where the graphs differ (ops: ours minus theirs):", "", *notes] if notes else [])) + "\n"


def notes_of(r: Row) -> list[str]:
    notes = [", ".join(f"{op} {d:+d}" for op, d in r.ops_diff.items())] if r.ops_diff else []
    if r.shapes[0] != r.shapes[1]:
        notes.append(f"output shapes differ: ours {r.shapes[0]}, theirs {r.shapes[1]}")
    if r.class_mismatches:
        notes.append(f"{r.class_mismatches} matched detections differ in class")
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT, help=f"comma-separated, from {DEFAULT}")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=30, help="ONNX Runtime runs per graph")
    ap.add_argument("--export-runs", type=int, default=3, help="exports per exporter")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch's threads while exporting (both sides)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--markdown", type=Path, help="also write the table, stamped, to this Markdown file")
    args = ap.parse_args()
    stamp = Stamp(__file__, ("attn-deploy", "torch", "onnx", "onnxruntime", "ultralytics", "onnxslim"))
    ultralytics()
    torch.set_num_threads(args.torch_threads)
    x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            t0 = time.perf_counter()
            rows.append(measure(name, Path(tmp), args, x))
            print(f"  measured {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(rows, args)
    if args.markdown:
        args.markdown.write_text(markdown_table(rows, args, stamp))
    if args.json:
        meta = {"imgsz": args.imgsz, "runs": args.runs, "export_runs": args.export_runs, "ort_threads": THREADS,
                "torch_threads": args.torch_threads, "ultralytics": ultralytics().__version__,
                "torch": torch.__version__}
        args.json.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
