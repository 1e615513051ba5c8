"""Where INT8 error appears, layer by layer: the report's per-block chart of the demo's naive
INT8 graph, for the documentation's results page (docs/results/per-block.md).

    python benchmarks/per_block_chart.py [--images 16] [--png docs/results/per-block-int8.png]
                                         [--markdown benchmarks/results/per-block-int8.md]

In a temporary folder: the shapes set (``python -m attn_deploy.train.shapes DIR --train 16
--val 16``), the demo (``demo/yolov5n-ca-shapes.pt``) exported at 320, and the naive INT8 graph
of that export (``calib --precision int8 --exclude none`` on ``--images`` training images).
Then ``parity --per-block`` of the demo against each of the two on the 16 validation images,
as the verb runs it; the INT8 one's chart is drawn by the function the HTML report uses
(``htmlreport.plots.block_chart``), and the caption says what was run, with the date, the
versions and the machine, and both verdicts. Not a test: figures move a little with the
machine and the versions.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from stamp import Stamp

from attn_deploy.calib.calibrate import calibrate
from attn_deploy.calib.result import CalibOptions
from attn_deploy.exporter import ExportSpec, export_model
from attn_deploy.htmlreport.plots import block_chart
from attn_deploy.models import load_model
from attn_deploy.train.shapes import write_dataset

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "yolov5n-ca-shapes.pt"
IMGSZ, TRAIN, VAL = 320, 16, 16


def per_block(candidate: Path, data: Path) -> Any:
    """``parity --weights DEMO --against CANDIDATE --data DATA --per-block``: the verb's steps."""
    from attn_deploy.diagnose.run import BlockOptions, open_blocks, per_block_parity
    from attn_deploy.engines import runner_for
    from attn_deploy.models.heads import match_sidecar
    from attn_deploy.parity.check import ParityOptions, check_parity
    from attn_deploy.sidecar import export_sidecar

    net = load_model(None, None, str(DEMO))
    opts = ParityOptions(data)
    runner = runner_for(candidate)
    match_sidecar(net, export_sidecar(candidate))
    blocks = open_blocks(candidate, net)
    result = check_parity(net, runner, str(candidate), opts)
    result.blocks = per_block_parity(net, runner, opts, blocks, BlockOptions(VAL))
    return result


def badge(result: Any) -> str:
    """The verdict as the report's header shows it (docs/stylesheets/extra.css colours it)."""
    return '<span class="verdict pass">PASS</span>' if result.passed else '<span class="verdict fail">FAIL</span>'


def summary(name: str, result: Any) -> str:
    """One sentence: the parity verdict and gates, then where the local error is largest."""
    b = result.blocks
    judged = sorted((r for r in b.rows if r.local is not None), key=lambda r: -r.local.rel)
    worst = ", ".join(f"{r.boundary.index} {r.boundary.module} {r.local.rel:.2g}" for r in judged[:5])
    blame = (f"culprit: layer {b.culprit} (local error over {b.tolerance:g})" if b.culprit is not None
             else f"no layer's local error over {b.tolerance:g}")
    gates = f"detection agreement {result.detections.agreement:.4f}" + (
        f", mAP50-95 drop {result.map_drop:.2f} points" if result.map_drop is not None else "")
    return f"- {badge(result)} against {name}: {gates}; {blame}; largest local errors (layer, module, rel): {worst}."


def heading(images: int, stamp: Stamp) -> str:
    return (f"`{DEMO.name}` at {IMGSZ}x{IMGSZ} against its float32 export and against the naive INT8 graph of that "
            f"export (`calib --precision int8 --exclude none`, calibrated on {images} training images), each by "
            f"`parity --per-block` on the {VAL} validation images of `python -m attn_deploy.train.shapes DIR "
            f"--train {TRAIN} --val {VAL}`. {stamp.line()} The chart is the INT8 graph's, drawn by the HTML "
            "report's own function.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=TRAIN, help="calibration images (of the 16 training images)")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "results" / "per-block-int8.png")
    ap.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "results" / "per-block-int8.md")
    args = ap.parse_args()
    started = Stamp(__file__, ("attn-deploy", "torch", "onnxruntime", "nvidia-modelopt"))
    with tempfile.TemporaryDirectory(prefix="per-block-") as tmp:
        data = write_dataset(Path(tmp) / "shapes", train=TRAIN, val=VAL)
        fp32, int8 = Path(tmp) / "yolov5n-ca-shapes.onnx", Path(tmp) / "yolov5n-ca-shapes.int8.onnx"
        export_model(load_model(None, None, str(DEMO)), fp32, ExportSpec((IMGSZ, IMGSZ)))
        calibrate(fp32, CalibOptions(data=data, images=args.images, exclude=("none",), output=int8))
        results = {"the float32 export": per_block(fp32, data), "the naive INT8 graph": per_block(int8, data)}
    args.png.write_bytes(block_chart(results["the naive INT8 graph"].blocks))
    lines = [heading(args.images, started), "", *(summary(k, r) for k, r in results.items())]
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
