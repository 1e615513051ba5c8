"""A bar chart of a bench comparison (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

from attn_deploy.engines.bench import BenchResult
from attn_deploy.files import atomic_write


def bench_chart(results: list[BenchResult], path: str | Path) -> Path:
    """The chart below, written to ``path``."""
    return atomic_write(path, bench_png(results))


def bench_png(results: list[BenchResult]) -> bytes:
    """Throughput and median latency (a whisker up to p99) per target, ratios to the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in results]
    base = results[0]
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results) + 4), 4.2))
    ys = [r.throughput for r in results]
    bars = ax_t.bar(labels, ys, color="#4C72B0")
    ax_t.bar_label(bars, [f"{y:.1f}\n{y / base.throughput:.2f}x" for y in ys], fontsize=8)
    ax_t.set_ylabel("images / s")
    ax_t.set_title(f"throughput (batch {base.batch})")
    med = [r.latency.median for r in results]
    err = [[0.0] * len(results), [r.latency.p99 - m for m, r in zip(med, results)]]
    bars = ax_l.bar(labels, med, yerr=err, capsize=4, color="#DD8452")
    ax_l.bar_label(bars, [f"{m:.2f}" for m in med], fontsize=8)
    ax_l.set_ylabel("ms")
    ax_l.set_title("median latency (whisker to p99)")
    for ax in (ax_t, ax_l):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.margins(y=0.2)
    fig.suptitle(base.device, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
