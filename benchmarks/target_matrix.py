"""Every built-in model exported for every target: does it parse, what was rewritten, how much
runs on the DLA, and how many copies between the DLA and the GPU. Writes the table that the
documentation's results page includes (docs/results/targets.md).

    python benchmarks/target_matrix.py [--imgsz 640] [--check-sizes 640,320] [-o benchmarks/target_matrix.md]

Per model and target, ``export --target`` (the opset the target parses, its rewrites; the
export's own lint with the target's parser table). A graph with a rewrite is also exported at
every ``--check-sizes`` with the full export checks, so each rewrite is judged by ONNX Runtime
against PyTorch at two sizes; the table says how each check ended. No TensorRT and no Jetson
are used: parsing is the parser table's verdict, DLA placement is ``targets/dla.py``'s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
from stamp import Stamp

from attn_deploy.exporter import ExportSpec, export_model
from attn_deploy.models import load_model, model_names
from attn_deploy.models.heads import set_end2end
from attn_deploy.targets import targets
from attn_deploy.targets.dla import dla_report

MODELS = [m for m in model_names() if m == "yolov5n" or m.startswith("yolov5n-")] + [
    "yolov8n", "yolov8n-ca", "yolo11n", "yolo11n-ca", "yolo12n", "yolo26n", "yolo26n:end2end"]


def cell(model: str, target, imgsz: int, sizes: list[int], tmp: Path, checked: dict) -> tuple[str, str]:
    """(the table's cell, a note line) for one model on one target; ``checked`` keeps the
    parity verdicts of graphs already checked (targets that make the same rewrites at the same
    opset make the same graph)."""
    name, _, variant = model.partition(":")
    out = tmp / f"{name}-{target.name}.onnx"
    net = load_model(name)
    if variant == "end2end":
        net = set_end2end(net, 300)
    from attn_deploy.exporter.export import target_opset

    result = export_model(net, out, ExportSpec((imgsz, imgsz), opset=target_opset(target, None)), check=False, target=target)
    from attn_deploy.exporter.lint import lint_onnx

    lint = lint_onnx(out, target)
    rewrites = result.extra["target"]["rewrites"]
    notes = []
    if rewrites:
        key = (model, result.spec.opset, tuple((x["node"], x["op"]) for x in rewrites))
        if key not in checked:
            verdicts = []
            for size in sizes:
                r = export_model(set_end2end(load_model(name), 300) if variant else load_model(name), tmp / "check.onnx",
                                 ExportSpec((size, size), opset=result.spec.opset), target=target)
                verdicts.append(f"{size}: {'pass' if r.passed else 'FAIL ' + '; '.join(r.failures())[:80]}")
            checked[key] = ", ".join(verdicts)
        ops = sorted({x["op"] for x in rewrites})
        notes.append(f"{model}: rewrote {len(rewrites)} node(s) ({', '.join(ops)}); "
                     f"export checks (lint, parity vs PyTorch) at {checked[key]}")
    if lint.passed:
        parse = "✓" + (f" ({'+'.join(sorted({x['op'] for x in rewrites}))} rewritten)" if rewrites else "")
    else:
        first = lint.findings[0]
        parse = f"✗ {first.op}" + (f" (layer {first.layer})" if first.layer is not None else "")
        notes.append(f"{model}: {len(lint.findings)} finding(s), first {first.node}: {first.reason}")
    if target.dla is None:
        return parse, "\n".join(notes)
    d = dla_report(onnx.load(out), target)
    return f"{parse}; DLA {d.share:.1%}, {d.switches} copies", "\n".join(notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--check-sizes", default="640,320")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/target_matrix.md"))
    args = ap.parse_args()
    chosen, sizes = targets(), [int(s) for s in args.check_sizes.split(",")]
    started = Stamp(__file__, ("attn-deploy", "torch", "onnx", "onnxruntime"))
    rows, notes, checked = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            cells = []
            for t in chosen:
                c, n = cell(model, t, args.imgsz, sizes, Path(tmp), checked)
                cells.append(c)
                for line in n.splitlines():  # one line per finding, naming every target it holds on
                    notes.setdefault(line, []).append(t.name)
            rows.append(f"| {model} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    head = ["| model | " + " | ".join(f"{t.name} (TensorRT {t.tensorrt})" for t in chosen) + " |",
            "|---|" + "---|" * len(chosen)]
    stamp = (started.line(f"at {args.imgsz}x{args.imgsz}") + " "
             "✓ the target's parser table takes every node; ✗ the first refused op; DLA: the share of the "
             "multiply-accumulates that run on the DLA and the tensors copied between DLA and GPU.")
    text = "\n".join([stamp, "", *head, *rows, "", "Rewrites and refusals:", "",
                      *(f"- {line.split(': ', 1)[0]} on {', '.join(on)}: {line.split(': ', 1)[1]}"
                        for line, on in notes.items())]) + "\n"
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
