"""The report's pictures: matplotlib (Agg) charts and detections drawn with OpenCV, as PNG bytes, in
the palette of ``data/style.py`` (the site's)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from attn_deploy.data import style

FLOOR = 1e-12  # zero errors drawn on a log axis


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def error_histograms(box_errors: list[float], score_errors: list[float]) -> bytes:
    """Box error (pixels) and score error of the matched detection pairs, log-spaced bins."""
    with style.charting() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for ax, values, what in ((axes[0], box_errors, "box error of matched pairs (px, max corner)"),
                                 (axes[1], score_errors, "score error of matched pairs")):
            _histogram(ax, np.asarray(values, dtype=np.float64), what)
        fig.tight_layout()
        return _png(plt, fig)


def _histogram(ax: Any, every: np.ndarray, what: str) -> None:
    v = every[every > 0]  # exact pairs have no place on a log axis: counted in the title
    if len(v):
        lo, hi = np.log10(v.min()), np.log10(v.max())
        ax.hist(v, bins=np.logspace(lo - 0.05, hi + 0.05, 30) if hi > lo else 10, color=style.SERIES)
        ax.set_xscale("log" if hi > lo else "linear")
        ax.axvline(float(np.percentile(every, 99)), color=style.MARKER, linestyle="--", lw=1, label="p99")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no error to show", ha="center", va="center", transform=ax.transAxes)
    exact = len(every) - len(v)
    ax.set_title(what + (f"; {exact} exactly equal" if exact else ""), fontsize=10)
    ax.set_ylabel("pairs")


def block_chart(report: Any) -> bytes:
    """Accumulated and local relative error per layer (log scale); attention layers shaded,
    the culprit marked, the tolerance drawn."""
    rows = report.rows
    x = np.arange(len(rows))
    acc = [max(r.accumulated.rel, FLOOR) for r in rows]
    loc = [max(r.local.rel, FLOOR) if r.local is not None else np.nan for r in rows]
    with style.charting() as plt:
        fig, ax = plt.subplots(figsize=(max(8, 0.42 * len(rows) + 2), 4.2))
        for i, r in enumerate(rows):
            if r.boundary.attention:
                ax.axvspan(i - 0.5, i + 0.5, color=style.ATTENTION, alpha=0.18, lw=0)
        ax.bar(x, loc, 0.55, color=style.SERIES_2, label="local (this layer alone, PyTorch's inputs)")
        ax.plot(x, acc, "o-", color=style.SERIES, label="accumulated (from the image)", ms=4, lw=1.6)
        ax.axhline(report.tolerance, color=style.BUDGET, linestyle="--", lw=1, label=f"tolerance {report.tolerance:g}")
        if report.culprit is not None:
            i = [r.boundary.index for r in rows].index(report.culprit)
            ax.bar([i], [loc[i]], 0.55, color=style.CULPRIT)
            ax.annotate(f"culprit: layer {report.culprit}", (i, loc[i]), xytext=(0, 18), textcoords="offset points",
                        ha="center", color=style.CULPRIT, fontweight="bold",
                        arrowprops={"arrowstyle": "->", "color": style.CULPRIT})
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{r.boundary.index} {r.boundary.module[:12]}" for r in rows], rotation=60, ha="right",
                      fontsize=7)
        ax.set_ylabel("max |error| / max |reference|")
        ax.set_title("per-block error (shaded: attention blocks)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        ax.margins(y=0.15)
        fig.tight_layout()
        return _png(plt, fig)


def detections_png(image: np.ndarray, example: Any, names: list[str], max_side: int = 520) -> bytes:
    """``image`` (RGB HWC uint8) with the reference's boxes (green) and the candidate's (blue)
    drawn over each other; missed reference boxes red, extra candidate boxes magenta, thick."""
    import cv2

    scale = min(1.0, max_side / max(image.shape[:2]))
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    canvas = np.ascontiguousarray(canvas)
    m = example.match
    missed, extra = set(m.missed), set(m.extra)
    for dets, odd, colour, odd_colour, width in ((example.reference, missed, style.REFERENCE_BOX, style.MISSED_BOX, 2),
                                                 (example.candidate, extra, style.CANDIDATE_BOX, style.EXTRA_BOX, 1)):
        for k in range(len(dets)):
            x1, y1, x2, y2 = (dets.boxes[k] * scale).round().astype(int).tolist()
            bad = k in odd
            cv2.rectangle(canvas, (x1, y1), (x2, y2), odd_colour if bad else colour, 3 if bad else width)
            if bad:
                cls = int(dets.classes[k])
                label = f"{names[cls] if cls < len(names) else cls} {float(dets.scores[k]):.2f}"
                cv2.putText(canvas, label, (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, odd_colour, 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a detections picture")
    return buf.tobytes()
