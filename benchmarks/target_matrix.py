"""Every built-in model exported for every target: does it parse, what was rewritten, how much
runs on the DLA, and how many copies between the DLA and the GPU. Writes the table that the
documentation's results page includes (docs/results/targets.md).

    python benchmarks/target_matrix.py [--imgsz 640] [--check-sizes 640,320] [-o benchmarks/target_matrix.md]
                                       [--plot docs/results/target-matrix.png]

Per model and target, ``export --target`` (the opset the target parses, its rewrites; the
export's own lint with the target's parser table). A graph with a rewrite is also exported at
every ``--check-sizes`` with the full export checks, so each rewrite is judged by ONNX Runtime
against PyTorch at two sizes; the table says how each check ended. No TensorRT and no Jetson
are used: parsing is the parser table's verdict, DLA placement is ``targets/dla.py``'s.
``--plot`` also draws the same cells as a heatmap in the documentation's palette, stamped
like the table.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
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


@dataclass
class Cell:
    """One model on one target: whether its parser table takes every node (else the first
    refused op), the ops ``export --target`` rewrote, and where there is a DLA its share of the
    multiply-accumulates and the tensors copied between it and the GPU."""

    parses: bool
    refused: str = ""
    rewritten: list[str] = field(default_factory=list)
    dla: float | None = None
    copies: int = 0

    def markdown(self) -> str:
        parse = ("✓" + (f" ({'+'.join(self.rewritten)} rewritten)" if self.rewritten else "")) if self.parses \
            else f"✗ {self.refused}"
        return parse if self.dla is None else f"{parse}; DLA {self.dla:.1%}, {self.copies} copies"


def cell(model: str, target, imgsz: int, sizes: list[int], tmp: Path, checked: dict) -> tuple[Cell, str]:
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
        found = Cell(True, rewritten=sorted({x["op"] for x in rewrites}))
    else:
        first = lint.findings[0]
        found = Cell(False, refused=first.op + (f" (layer {first.layer})" if first.layer is not None else ""))
        notes.append(f"{model}: {len(lint.findings)} finding(s), first {first.node}: {first.reason}")
    if target.dla is not None:
        d = dla_report(onnx.load(out), target)
        found.dla, found.copies = d.share, d.switches
    return found, "\n".join(notes)


def plot(models: list[str], names: list[str], cells: list[list[Cell]], stamp: str, out: Path) -> None:
    """The matrix as a heatmap: a refused cell in the fail colour with its op; a cell that
    parses in teal, as dark as the DLA's share of the MACs where the target has a DLA (pale
    where it has none); a dot where ``export --target`` rewrote nodes."""
    import textwrap

    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.ticker import PercentFormatter

    from attn_deploy.data import style

    scale, norm = LinearSegmentedColormap.from_list("dla", [style.PRIMARY_PALE, style.PRIMARY_DARK]), Normalize(0.5, 1.0)
    with style.charting() as plt:
        fig, ax = plt.subplots(figsize=(1.15 * len(names) + 2.6, 0.3 * len(models) + 1.8), dpi=110, layout="constrained")
        for i, row in enumerate(cells):
            for j, c in enumerate(row):
                face = style.FAIL if not c.parses else style.PRIMARY_PALE if c.dla is None else scale(norm(c.dla))
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=face, edgecolor="white", lw=1.5))
                dark = not c.parses or (c.dla is not None and norm(c.dla) > 0.55)
                text = f"✗ {c.refused.split(' ')[0]}" if not c.parses else "✓" if c.dla is None else \
                    f"{c.dla:.1%} · {c.copies}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else style.TEXT)
                if c.rewritten:
                    ax.plot(j + 0.4, i - 0.28, "o", ms=3.5, color=style.ACCENT, mec="white", mew=0.5)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylim(len(models) - 0.5, -0.5)
        ax.set_xticks(np.arange(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(models)), models, fontsize=8)
        ax.tick_params(length=0)
        ax.grid(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        fig.suptitle("Does the target's TensorRT parse it, and how much runs on the DLA", fontsize=11,
                     fontweight="bold", x=0.01, ha="left")
        ax.set_title("\n".join(textwrap.wrap(stamp.replace("`", ""), 150)), fontsize=7, loc="left",
                     color=style.TEXT_LIGHT, fontweight="normal")
        bar = fig.colorbar(plt.cm.ScalarMappable(norm, scale), ax=ax, fraction=0.025, pad=0.01,
                           label="share of MACs on the DLA", format=PercentFormatter(1.0, decimals=0))
        bar.outline.set_visible(False)
        legend = [plt.Line2D([], [], ls="", marker="s", ms=8, color=c, label=t) for c, t in
                  ((style.PRIMARY_PALE, "✓ parses (no DLA on this box)"),
                   (style.PRIMARY, "parses; share of MACs on the DLA · tensors copied DLA↔GPU"),
                   (style.FAIL, "✗ the first op the parser refuses"))]
        legend.append(plt.Line2D([], [], ls="", marker="o", ms=5, color=style.ACCENT,
                                 label="export --target rewrote nodes (checked against PyTorch)"))
        fig.legend(handles=legend, loc="outside lower left", ncol=4, fontsize=7.5)
        fig.savefig(out)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--check-sizes", default="640,320")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/target_matrix.md"))
    ap.add_argument("--plot", type=Path, help="also draw the matrix as a heatmap to this PNG")
    args = ap.parse_args()
    chosen, sizes = targets(), [int(s) for s in args.check_sizes.split(",")]
    started = Stamp(__file__, ("attn-deploy", "torch", "onnx", "onnxruntime"))
    rows, grid, notes, checked = [], [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            cells = []
            for t in chosen:
                c, n = cell(model, t, args.imgsz, sizes, Path(tmp), checked)
                cells.append(c)
                for line in n.splitlines():  # one line per finding, naming every target it holds on
                    notes.setdefault(line, []).append(t.name)
            grid.append(cells)
            rows.append(f"| {model} | " + " | ".join(c.markdown() for c in cells) + " |")
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
    if args.plot:
        plot(args.models.split(","), [f"{t.name} (TRT {t.tensorrt})" for t in chosen], grid, stamp.split(" ✓")[0], args.plot)


if __name__ == "__main__":
    main()
