r"""INT8 calibration searches side by side, in one run, on the same model and images.

Not a test: times depend on the machine. For one float32 ONNX and one data.yaml, runs
``calib --precision int8`` three ways, one after the other in this process: ``--exclude none``
(one Model Optimizer calibration and one scoring: the baseline; with ``--entropy`` also with
entropy calibration), the ranked search (the
default ``auto``) and the measured search (the earlier ``auto``, every trial calibrated anew).
Prints, per way: wall time and its ratio to ``none``, trials, the layers kept out of INT8,
damage (mAP50-95 points, on the whole val split), the share of MACs in INT8 and the stage times. Then, for the groups
the ranked search kept (one at a time and all together), the same graph made two ways,
Q/DQ surgery on the naive graph and a new calibration with those nodes excluded, each scored
on the whole val split: surgery is only a shortcut if the two agree.

    python benchmarks/calib_bench.py MODEL.onnx DATA.yaml [--images 64] [--skip-measured] [--entropy] [--best] [--qat N] [--skip-ranked]
        [--methods max,mse,percentile] [--keep PATTERN] [--halves]

``--methods`` runs everything-in-INT8 and the ranked search once per activation-range method;
``--keep PATTERN`` adds, per method, the graph with the nodes matching PATTERN kept in float
(``'^/model\.24/m\.'``: the official YOLOv5n's Detect outputs). ``--halves`` is the honest split
for a small labelled set (the real model's COCO128, ``../shared/data/coco128-yolov5n``): the
images in sorted file-name order, even positions for calibration and every search, odd ones for
scoring; every way's graph is then scored on the odd half against the float32 graph, with the
jackknife standard error beside the damage ("held out" columns).

With ``--best`` and ``--qat N`` it is the frontier in one table: everything in INT8, the ranked
search, the per-layer choice of scales, and quantization-aware fine-tuning, each with its damage,
its share of MACs in INT8 and its time as a ratio to ``--exclude none`` in the same run.
``--markdown FILE.md`` also writes that table with the date, versions and machine (the
documentation's results page includes it as it is), ``--plot FILE.png`` the frontier as a
chart: damage against the share of MACs in INT8, the budget and the floor drawn in.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx
from stamp import Stamp

from attn_deploy.calib.calibrate import calibrate
from attn_deploy.calib.evaluate import Evaluator, calibration_images
from attn_deploy.calib.int8 import quantize_int8
from attn_deploy.calib.result import CalibOptions, CalibResult
from attn_deploy.calib.surgery import keep_out
from attn_deploy.exporter.layers import layer_nodes
from attn_deploy.sidecar import read_sidecar


def run(src: Path, opts: CalibOptions) -> tuple[CalibResult, float]:
    t = time.perf_counter()
    result = calibrate(src, opts)
    return result, time.perf_counter() - t


def run_qat(src: Path, opts: CalibOptions, epochs: int) -> tuple[CalibResult, float]:
    """``calib --qat``: the model the export sidecar names, fine-tuned; scored as calib scores."""
    from attn_deploy.qat import qat_for_onnx

    t = time.perf_counter()
    result = qat_for_onnx(src, opts, epochs)
    return result, time.perf_counter() - t


def surgery_vs_recalibration(src: Path, data: Path, images: int, ranked: CalibResult, naive: bytes) -> list[str]:
    """Per kept group and for all of them: damage by surgery and by a new calibration."""
    model = onnx.load(src)
    layers = layer_nodes(model)
    nodes = {e.name: e.nodes(layers.get(e.layer, [])) for e in ranked.ranking}
    kept = ranked.kept
    side = read_sidecar(src) or {}
    geometry = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    ev = Evaluator(data, tuple(geometry[2:]), geometry[0] or 1, None, side.get("output_layout") or "xywh_obj_cls")
    ref = ev.set_reference(src)
    calib, _ = calibration_images(data, tuple(geometry[2:]), images)
    naive_model = onnx.load_from_string(naive)
    sets = [[k] for k in kept] + ([kept] if len(kept) > 1 else [])
    lines = []
    for group in sets:
        names = [n for g in group for n in nodes[g]]
        cut = ev.score(keep_out(naive_model, names).SerializeToString()).damage(ref)
        again = ev.score(quantize_int8(src, calib, "max", exclude=names)).damage(ref)
        lines.append(f"| {', '.join(group)} | {cut:.3f} | {again:.3f} | {cut - again:+.3f} |")
    return lines


def frontier_table(results: dict[str, tuple[CalibResult, float]], base_s: float,
                   held: dict[str, tuple[float, float]] | None = None) -> list[str]:
    extra = ("| held-out damage ", "---:|") if held is not None else ("", "")
    rows = [f"| search | time s | x none | trials | damage {extra[0]}| MACs in INT8 | kept out of INT8 | stages s |",
            f"|---|---:|---:|---:|---:|{extra[1]}---:|---|---|"]
    for name, (r, s) in results.items():
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r.stages.items() if k != "total")
        share = f"{r.coverage.share:.1%}" + ("" if r.int8_enough else " (below the floor: not written)")
        cell = (f"| {held[name][0]:.2f} +- {held[name][1]:.2f} " if name in held else "| not written ") if held is not None else ""
        rows.append(f"| {name} | {s:.0f} | {s / base_s:.2f} | {r.trials} | {r.damage:.2f} {cell}| {share} | "
                    f"{', '.join(r.kept) or 'nothing'} | {stages} |")
    return rows


def halves(data: Path, tmp: Path) -> tuple[Path, Path]:
    """``data``'s images (its val split) in sorted file-name order, split into two data.yaml:
    even positions (calibration, search) and odd positions (scoring)."""
    from attn_deploy.data import load_data

    source = load_data(data, "val")
    files = sorted((s.image.resolve() for s in source.samples), key=lambda p: p.name)
    out = []
    for name, picked in (("even", files[0::2]), ("odd", files[1::2])):
        (tmp / f"{name}.txt").write_text("".join(f"{f}\n" for f in picked))
        (tmp / f"{name}.yaml").write_text(f"path: .\ntrain: {name}.txt\nval: {name}.txt\nnames: {source.names!r}\n")
        out.append(tmp / f"{name}.yaml")
    return out[0], out[1]


def held_out(src: Path, data: Path, results: dict[str, tuple[CalibResult, float]]) -> dict[str, tuple[float, float]]:
    """Every written graph's damage on ``data`` against the float32 ``src``, and its standard error."""
    model = onnx.load(src)
    geometry = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    side = read_sidecar(src) or {}
    ev = Evaluator(data, tuple(geometry[2:]), geometry[0] or 1, None, side.get("output_layout") or "xywh_obj_cls")
    ref = ev.set_reference(src)
    out = {}
    for name, (r, _) in results.items():
        if Path(r.output).is_file():
            score = ev.score(Path(r.output))
            out[name] = (score.damage(ref), score.damage_error(ref))
    return out


def heading(args: argparse.Namespace, results: dict[str, tuple[CalibResult, float]], stamp: Stamp) -> str:
    r = next(iter(results.values()))[0]
    split = (f"calibration and every search on the even half of `{args.data.parent.name}` ({r.counts.get('val', '?')} "
             "images, sorted by file name), the held-out damage on the odd half with its jackknife standard error"
             if args.halves else f"{r.counts.get('val', '?')} validation images of `{args.data.parent.name}`")
    return (f"`{args.onnx.name}`, {split}, calibration {args.images} images, budget {args.budget:g} points of mAP50-95 (float32 "
            f"{r.reference.map50_95:.3f}). {stamp.line()} Each time is also given as a ratio to "
            "`--exclude none` in the same run.")


def plot(results: dict[str, tuple[CalibResult, float]], budget: float, title: str, out: Path,
         held: dict[str, tuple[float, float]] | None = None) -> None:
    """Damage against the share of MACs in INT8, one point per way; with ``held``, the held-out
    damage with its standard error, and only the graphs written. Ways that made the same graph
    (the same coverage and damage) share one point and one label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[tuple[float, float], list[str]] = {}
    errors: dict[tuple[float, float], float] = {}
    for name, (r, _) in results.items():
        if held is not None and name not in held:
            continue
        damage, error = held[name] if held is not None else (r.damage, 0.0)
        key = (round(100 * r.coverage.share, 2), round(damage, 4))
        points.setdefault(key, []).append(name)
        errors[key] = error
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for (share, damage), names in points.items():
        ax.errorbar(share, damage, yerr=errors[(share, damage)] or None, fmt="o", ms=6, capsize=3, zorder=3)
        ax.annotate(" = ".join(names), (share, damage), textcoords="offset points", xytext=(6, 4), fontsize=7.5)
    ax.axhline(budget, color="tab:green", linestyle="--", linewidth=1, label=f"budget {budget:g} points")
    floor = next(iter(results.values()))[0].min_int8
    ax.axvline(100 * floor, color="tab:red", linestyle=":", linewidth=1, label=f"floor {floor:.0%} in INT8")
    shares = [k[0] for k in points] + [100 * floor]
    lows = [k[1] - errors[k] for k in points] + [0.0]
    highs = [k[1] + errors[k] for k in points] + [budget]
    ax.set_xlim(min(shares) - 5, 112)
    ax.set_ylim(min(lows) - 0.1, max(highs) * 1.15)
    ax.set_xlabel("MACs in INT8 (%)")
    ax.set_ylabel("mAP50-95 lost (points)" + (", held out" if held is not None else ""))
    ax.set_title(f"{title}: damage against INT8 coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--images", type=int, default=64, help="calibration images")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--skip-measured", action="store_true", help="the earlier search takes 5-30x longer")
    ap.add_argument("--entropy", action="store_true", help="also everything in INT8 with entropy calibration")
    ap.add_argument("--best", action="store_true", help="also --method best (max or entropy per layer), naive and auto")
    ap.add_argument("--qat", type=int, default=0, help="also N epochs of quantization-aware fine-tuning")
    ap.add_argument("--skip-ranked", action="store_true", help="only the naive baseline and the ways asked for")
    ap.add_argument("--methods", default="max", help="activation ranges, comma-separated (max, entropy, mse, percentile)")
    ap.add_argument("--keep", help="also, per method, the graph with the nodes matching this pattern kept in float")
    ap.add_argument("--halves", action="store_true", help="calibrate and search on the even images, score on the odd")
    ap.add_argument("--markdown", type=Path, help="also write the table, stamped, to this Markdown file")
    ap.add_argument("--plot", type=Path, help="also draw damage against MACs in INT8 to this PNG")
    args = ap.parse_args()
    started = Stamp(__file__, ("attn-deploy", "torch", "onnxruntime", "nvidia-modelopt", "pycocotools"))
    with tempfile.TemporaryDirectory(prefix="calib-bench-") as tmp:
        data, scoring = halves(args.data, Path(tmp)) if args.halves else (args.data, None)
        base = {"data": data, "images": args.images, "max_map_drop": args.budget}
        ways = []
        for method in args.methods.split(","):
            tag = "" if method == "max" else f", {method}"
            ways.append((f"none{tag}", CalibOptions(**base, method=method, exclude=("none",),
                                                    output=Path(tmp) / f"none-{method}.onnx")))
            if args.keep:
                ways.append((f"outputs in float{tag}", CalibOptions(**base, method=method, exclude=(args.keep,),
                                                                   output=Path(tmp) / f"keep-{method}.onnx")))
            if not args.skip_ranked:
                ways.append((f"ranked{tag}", CalibOptions(**base, method=method, output=Path(tmp) / f"ranked-{method}.onnx")))
        if args.entropy:
            ways.insert(1, ("none, entropy", CalibOptions(**base, method="entropy", exclude=("none",),
                                                          output=Path(tmp) / "entropy.onnx")))
        if args.best:
            ways += [("none, best", CalibOptions(**base, method="best", exclude=("none",), output=Path(tmp) / "bn.onnx")),
                     ("ranked, best", CalibOptions(**base, method="best", output=Path(tmp) / "best.onnx"))]
        if not args.skip_measured:
            ways.append(("measured", CalibOptions(**base, search="measured", output=Path(tmp) / "measured.onnx")))
        if args.qat:
            ways.append((f"qat, {args.qat} epoch(s)", CalibOptions(**base, output=Path(tmp) / "qat.int8.onnx")))
        results = {}
        for name, opts in ways:
            results[name] = run_qat(args.onnx, opts, args.qat) if name.startswith("qat") else run(args.onnx, opts)
            print(f"{name}: {results[name][1]:.0f} s", flush=True)
        base_s = next(iter(results.values()))[1]
        held = held_out(args.onnx, scoring, results) if scoring is not None else None
        print(f"\n{args.onnx.name}, {args.data}, calibration {args.images} images, budget {args.budget:g}\n")
        table = frontier_table(results, base_s, held)
        print("\n".join(table))
        if args.markdown:
            args.markdown.write_text("\n".join([heading(args, results, started), "", *table]) + "\n")
        if args.plot:
            plot(results, args.budget, args.onnx.stem, args.plot, held)
        ranked = results["ranked"][0] if "ranked" in results else None
        if ranked is not None and ranked.kept and ranked.int8_enough:
            naive = (Path(tmp) / "none-max.onnx").read_bytes()
            print("\n| kept out | damage, surgery | damage, new calibration | difference |")
            print("|---|---:|---:|---:|")
            for line in surgery_vs_recalibration(args.onnx, data, args.images, ranked, naive):
                print(line)


if __name__ == "__main__":
    main()
