"""How much two correct float32 evaluations of a model differ, and what ``export`` allows.

Not a test: it measures what the tolerance of ``export``'s parity check is derived from
(``attn_deploy/exporter/parity_check.py``). Per model it prints:

- noise: PyTorch float32 against float64 on one image (boxes px, scores), what the check
  measures on the model it exports;
- ORT-32: ONNX Runtime against PyTorch float32 on the check's images (what it judges), and
  ORT-64: ONNX Runtime against float64 on the first image;
- ratio: ORT-32 over the noise (what ``NOISE_FACTOR`` must cover);
- tol and margin: the derived tolerance, and how many times the observed error fits in it;
- damaged: the same graph with one head weight row +0.5 (objectness of one anchor, as
  tests/test_demo_parity.py does) and, separately, one backbone conv element +8 max|w|
  (tests/test_blocks.py), as multiples of the noise and of the tolerance.

Random-init activations fade to nothing through the depth (BatchNorm's running statistics
are 0 and 1, which the real activations do not have), far from a trained checkpoint's, and
float32 error grows with them. ``NAME@bn`` recomputes the BatchNorm statistics from random
images, as training leaves them; ``NAME@xS`` then multiplies every BatchNorm weight and bias
by S (activations S times larger where they stay positive).

    python benchmarks/parity_noise.py [--models yolov5n,yolov5s] [--imgsz 640] [--images 3] [--markdown FILE.md]

``--markdown FILE.md`` also writes the rows as a table with the date, versions, machine and its
load (``benchmarks/stamp.py``): the documentation's results page includes it as it is.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from stamp import Stamp

from attn_deploy.engines import OnnxrtRunner
from attn_deploy.exporter import ExportSpec
from attn_deploy.exporter.parity_check import measure_noise, random_images
from attn_deploy.exporter.torch2onnx import clean, onnx_metadata, torch_to_onnx
from attn_deploy.models import create_model, load_model
from attn_deploy.models.yolo import DetectionModel
from attn_deploy.parity.tensor import Noise, Tolerances, compare_part

ROOT = Path(__file__).resolve().parent.parent
DEMOS = {"demo-ca": ROOT / "demo" / "yolov5n-ca-shapes.pt", "demo-cbam": ROOT / "demo" / "yolov5n-cbam-shapes.pt"}
DEFAULT = ("yolov5n,yolov5s,yolov5x,yolov5n@bn,yolov5s@bn,yolov5m@bn,yolov5l@bn,yolov5x@bn,yolov5s-ca@bn,"
           "yolov5s-cbam@bn,yolov5s@bn@x2,yolov5m@bn@x2,demo-ca,demo-cbam,demo-ca@320,demo-cbam@320")


@dataclass
class Row:
    name: str
    imgsz: int
    noise: Noise
    ort32: tuple[float, float]
    ort64: tuple[float, float]
    tol: Tolerances
    worst: tuple[float, float]  # error / tolerance, boxes and scores
    damaged: list[tuple[float, float, float]]  # (boxes x noise, scores x noise, worst x tolerance)
    act: float  # largest |activation| entering the head
    seconds: float


def build(spec: str) -> tuple[str, DetectionModel, int | None]:
    """``name[@bn][@xS][@IMGSZ]`` -> (label, model, imgsz or None)."""
    name, *mods = spec.split("@")
    scale = next((float(m[1:]) for m in mods if m.startswith("x")), 1.0)
    size = next((int(m) for m in mods if m.isdigit()), None)
    net = load_model(weights=str(DEMOS[name])) if name in DEMOS else create_model(name)
    if "bn" in mods:
        recalibrate(net, size or 320)
    if scale != 1.0:
        inflate(net, scale)
    return spec, net.eval(), size


def recalibrate(net: DetectionModel, size: int) -> None:
    """BatchNorm statistics from random images, as training leaves them: every layer's output
    normalised, so activations keep their size through the depth instead of fading (random
    init's running stats are 0 and 1, which the real activations do not have)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches seen
    net.train()
    with torch.no_grad():
        for seed in range(2):
            net(torch.from_numpy(random_images(2, size, size, 100 + seed)))
    net.eval()


def inflate(net: DetectionModel, scale: float) -> None:
    """Every BatchNorm's weight and bias times ``scale``: activations the size trained ones have."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(scale)
                m.bias.mul_(scale)


def head_activation(net: DetectionModel, x: torch.Tensor) -> float:
    """The largest |value| entering the Detect convolutions (what the head's sums are made of)."""
    seen: list[float] = []
    hooks = [c.register_forward_hook(lambda _m, i, _o: seen.append(float(i[0].abs().max()))) for c in net.detect.m]
    with torch.inference_mode():
        net(x)
    for h in hooks:
        h.remove()
    return max(seen)


def damage_head(plain: bytes) -> bytes:
    """One output row of the P3 head +0.5: anchor 1's objectness (as tests/test_demo_parity.py)."""
    model = onnx.load_from_string(plain)
    init = next(t for t in model.graph.initializer if re.fullmatch(r"model\.\d+\.m\.0\.weight", t.name))
    w = numpy_helper.to_array(init).copy()
    w[w.shape[0] // 3 + 4] += 0.5  # 3 anchors of (5 + nc) rows: anchor 1's objectness
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return model.SerializeToString()


def damage_backbone(plain: bytes) -> bytes:
    """One element of the first 4-D conv weight after the stem +8 max|w| (as tests/test_blocks.py)."""
    model = onnx.load_from_string(plain)
    convs = [t for t in model.graph.initializer if len(t.dims) == 4]
    init = convs[2]
    w = numpy_helper.to_array(init).copy()
    w[(3, 0, 0, 0)] += 8 * np.abs(w).max()
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return model.SerializeToString()


def errors(net: DetectionModel, runner: OnnxrtRunner, xs: list[np.ndarray], tol: Tolerances,
           noise: Noise) -> tuple[tuple[float, float], tuple[float, float]]:
    """Max |ORT - torch32| per part over ``xs``, and the worst error / tolerance per part."""
    err, worst = [0.0, 0.0], [0.0, 0.0]
    for x in xs:
        with torch.inference_mode():
            ref = net(torch.from_numpy(x)).numpy()
        cand = runner.run({"images": x})["output0"]
        for k, (name, sl) in enumerate((("output0.boxes", np.s_[..., :4]), ("output0.scores", np.s_[..., 4:]))):
            s = compare_part(name, ref[sl], cand[sl], tol, noise)
            err[k], worst[k] = max(err[k], s.max_abs), max(worst[k], s.worst)
    return (err[0], err[1]), (worst[0], worst[1])


def measure(spec: str, imgsz: int, images: int) -> Row:
    start = time.perf_counter()
    label, net, size = build(spec)
    size = size or imgsz
    noise = measure_noise(net, size, size)
    tol = noise.tolerances()
    spec = ExportSpec((size, size))
    plain = clean(torch_to_onnx(net, spec), net.name, onnx_metadata(net, spec)).SerializeToString()
    xs = [random_images(1, size, size, seed) for seed in range(images)]
    ort32, worst = errors(net, OnnxrtRunner(plain, spinning=False), xs, tol, noise)
    with torch.inference_mode():
        ref64 = net.double()(torch.from_numpy(xs[0]).double()).numpy()
    net.float()
    cand = OnnxrtRunner(plain, spinning=False).run({"images": xs[0]})["output0"].astype(np.float64)
    ort64 = (float(np.abs(cand - ref64)[..., :4].max()), float(np.abs(cand - ref64)[..., 4:].max()))
    damaged = []
    for bad in (damage_head(plain), damage_backbone(plain)):
        err, w = errors(net, OnnxrtRunner(bad, spinning=False), xs[:1], tol, noise)
        damaged.append((times(err[0], noise.box), times(err[1], noise.score), max(w)))
    act = head_activation(net, torch.from_numpy(xs[0]))
    return Row(label, size, noise, ort32, ort64, tol, worst, damaged, act, time.perf_counter() - start)


def times(a: float, b: float) -> float:
    """a / b, infinite when b is 0 (a part float32 and float64 agree on exactly)."""
    return a / b if b else float("inf")


def show(r: Row) -> None:
    n = r.noise
    print(f"{r.name:18s} {r.imgsz:4d} act {r.act:8.3g} | noise {n.box:8.2e} px {n.score:8.2e} | "
          f"ORT-32 {r.ort32[0]:8.2e} px {r.ort32[1]:8.2e} | ORT-64 {r.ort64[0]:8.2e} px {r.ort64[1]:8.2e} | "
          f"ratio {times(r.ort32[0], n.box):5.2f} {times(r.ort32[1], n.score):5.2f} | "
          f"tol {r.tol.box_atol:8.2e} px {r.tol.score_atol:8.2e} | margin {1 / r.worst[0]:7.1f} {1 / r.worst[1]:7.1f} | "
          + " ".join(f"dmg {b:.2g}/{s:.2g}x noise {w:.3g}x tol" for b, s, w in r.damaged)
          + f" | {r.seconds:.0f}s", flush=True)


def markdown_table(rows: list[Row], images: int, stamp: Stamp) -> str:
    """The rows as Markdown under their stamp; each pair is boxes (px) / scores."""
    lines = [stamp.line(f"with ORT-32 over {images} random image(s) (1 for yolov5l/x)") + " Each pair is boxes "
             "(px) / scores. noise: PyTorch float32 against float64 on one image; ORT-32: ONNX Runtime against "
             "PyTorch float32, ORT-64 against float64; tolerance: what the export's parity check allows; margin: "
             "how many times the worst error fits in it; damaged graphs: as multiples of the noise (boxes / scores) "
             "and of the tolerance (the worse part).", "",
             ("| model | imgsz | head input max | noise | ORT-32 | ORT-64 | ORT-32 / noise | tolerance | margin "
              "| head row +0.5: x noise, x tol | backbone weight +8 max: x noise, x tol | s |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        n, t = r.noise, r.tol
        damaged = [f"{b:.2g} / {sc:.2g}, {w:.3g}" for b, sc, w in r.damaged]
        lines.append(f"| {r.name} | {r.imgsz} | {r.act:.3g} | {n.box:.2e} / {n.score:.2e} | "
                     f"{r.ort32[0]:.2e} / {r.ort32[1]:.2e} | {r.ort64[0]:.2e} / {r.ort64[1]:.2e} | "
                     f"{times(r.ort32[0], n.box):.2f} / {times(r.ort32[1], n.score):.2f} | "
                     f"{t.box_atol:.2e} / {t.score_atol:.2e} | {1 / r.worst[0]:.1f} / {1 / r.worst[1]:.1f} | "
                     f"{' | '.join(damaged)} | {r.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT, help="comma list of NAME[@xSCALE][@IMGSZ]")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--images", type=int, default=3, help="images for ORT-32 (yolov5l/x: 1)")
    ap.add_argument("--markdown", type=Path, help="also write the rows, stamped, to this Markdown file")
    args = ap.parse_args()
    stamp, rows = Stamp(__file__, ("attn-deploy", "torch", "onnx", "onnxruntime")), []
    for spec in args.models.split(","):
        big = spec.split("@")[0] in ("yolov5l", "yolov5x")
        rows.append(measure(spec, args.imgsz, 1 if big else args.images))
        show(rows[-1])
    if args.markdown:
        args.markdown.write_text(markdown_table(rows, args.images, stamp))


if __name__ == "__main__":
    main()
