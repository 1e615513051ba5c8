"""What each verb's report shows: parity, calib, bench."""

from __future__ import annotations

from typing import Any

import numpy as np

from attn_deploy.htmlreport.page import Figure, Page, Section, Table, from_rich
from attn_deploy.htmlreport.plots import block_chart, detections_png, error_histograms


def parity_page(result: Any, names: list[str]) -> Page:
    from attn_deploy.report import parity_table

    gates = Table(["gate", "figure", "threshold", "result"], _gate_rows(result))
    page = Page(f"parity: {result.candidate} vs PyTorch", result.passed, failures=result.failures(), facts=[
        ("candidate", result.candidate), ("data", result.data), ("images", str(result.images)),
        ("input", f"{result.imgsz[0]} x {result.imgsz[1]}"),
    ])
    page.sections.append(Section("Verdict and gates", "The gates decide; the tensor figures explain.", [gates]))
    page.sections.append(Section("Tensors and detections", tables=[from_rich(parity_table(result))]))
    d = result.detections
    page.sections.append(Section("Errors of matched detections", figures=[Figure(
        error_histograms(d.box_errors, d.score_errors),
        f"{d.matched} matched pairs (same class, IoU >= {d.iou_thres:g}); dashed line: 99th percentile")]))
    if result.blocks is not None:
        page.sections.append(_blocks_section(result.blocks))
    if result.examples:
        page.sections.append(_examples_section(result.examples, names))
    return page


def _gate_rows(result: Any) -> list[list[str]]:
    d, g = result.detections, result.gates
    rows = [["detection agreement", f"{d.agreement:.4f}", f">= {g.min_agreement:g}",
             "pass" if d.agreement >= g.min_agreement else "FAIL"]]
    if result.map_drop is not None:
        r, c = result.map_reference, result.map_candidate
        rows.append(["mAP50-95 drop (points)", f"{result.map_drop:.3f}", f"<= {g.max_map_drop:g}",
                     "pass" if result.map_drop <= g.max_map_drop else "FAIL"])
        rows.append(["mAP50 reference / candidate", f"{r.map50:.4f} / {c.map50:.4f}", "", ""])
        rows.append(["mAP50-95 reference / candidate", f"{r.map50_95:.4f} / {c.map50_95:.4f}", "", ""])
    else:
        rows.append(["mAP", "no labels", "", "not gated"])
    return rows


def _blocks_section(blocks: Any) -> Section:
    from attn_deploy.report import blocks_table

    table = from_rich(blocks_table(blocks))
    table.marks = ["culprit" if r.boundary.index == blocks.culprit else "attention" if r.boundary.attention else ""
                   for r in blocks.rows]
    text = ("Accumulated: the candidate's layer output, run from the image, against PyTorch's. Local: the layer alone, "
            "cut out of the candidate and fed PyTorch's own inputs to it, so its own damage is told apart from what it "
            "inherits. Both relative to the layer's max |output|. "
            + (f"Culprit: layer {blocks.culprit}." if blocks.culprit is not None else
               f"No layer's local error exceeds {blocks.tolerance:g}."))
    figure = Figure(block_chart(blocks), "per-block relative error, log scale: accumulated (line), local (bars), "
                                         "the culprit's bar red, the tolerance dashed; shaded: attention blocks")
    return Section("Per-block error", text, [table], [figure], wide=True)


def _examples_section(examples: list[Any], names: list[str]) -> Section:
    from attn_deploy.data.loader import read_image

    figures = []
    for e in examples:
        image = e.image if e.image is not None else read_image(e.sample.image)[:, :, ::-1]
        where = e.sample.image.name if e.sample is not None else "random image"
        figures.append(Figure(detections_png(np.ascontiguousarray(image), e, names),
                              f"{where}: {len(e.match.pairs)} matched, {len(e.match.missed)} missed, {len(e.match.extra)} extra"))
    text = ("Reference (PyTorch) boxes green, candidate boxes blue; a reference box the candidate missed is thick red, "
            "a candidate box the reference does not have is thick magenta. Most disagreeing images first.")
    return Section("Detections, one over the other", text, figures=figures)


def calib_page(result: Any) -> Page:
    from attn_deploy.calib.chart import sensitivity_png
    from attn_deploy.report import calib_table

    page = Page(f"calib: {result.output.name} ({result.precision})", result.passed, failures=result.failures())
    page.sections.append(Section("Accuracy: FP32, FP16, INT8", tables=[from_rich(calib_table(result))]))
    if result.ranking:
        page.sections.append(Section("INT8 sensitivity", "Every layer's local error in the everything-in-INT8 graph "
                                     "(per-block parity against float32), and the damage of each set of layers kept "
                                     "out of INT8; * marks the layers kept in higher precision.",
                                     figures=[Figure(sensitivity_png(result), "layer ranking and trials")]))
    elif result.sensitivity:
        page.sections.append(Section("INT8 sensitivity", "Damage with only a group in INT8, and with it kept out of INT8; "
                                     "* marks the groups kept in higher precision.",
                                     figures=[Figure(sensitivity_png(result), "sensitivity per candidate group")]))
    return page


def bench_page(results: list[Any]) -> Page:
    from attn_deploy.engines.chart import bench_png
    from attn_deploy.report import bench_table

    page = Page(f"bench: {', '.join(r.label for r in results)}", None, facts=[("device", results[0].device)])
    page.sections.append(Section("Latency and throughput", tables=[from_rich(bench_table(results))],
                                 figures=[Figure(bench_png(results), "per backend and precision; ratios to the first")]))
    return page
