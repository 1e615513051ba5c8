"""The sensitivity chart of an INT8 calibration (matplotlib, Agg): the ranked search's layer
ranking and trials, or the measured search's per-group damage; in the palette of
``data/style.py``, the per-block chart's meanings kept (local error in the second series
colour, the layers blamed in the culprit's, the budget as the tolerance is drawn)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from attn_deploy.data import style
from attn_deploy.files import atomic_write


def sensitivity_chart(result: Any, path: Path) -> Path:
    """The chart below, written to ``path``."""
    return atomic_write(path, sensitivity_png(result))


def sensitivity_png(result: Any) -> bytes:
    return ranking_png(result) if result.ranking else groups_png(result)


def ranking_png(result: Any) -> bytes:
    """Left: every layer's local INT8 error in the naive graph (per-block parity), in rank
    order, the kept ones marked. Right: damage of each trial (the first k layers of the order
    kept out, on the search subset) and of the final graph on all images, with the budget."""
    from matplotlib.ticker import MaxNLocator

    rows = result.ranking
    kept = set(result.kept)
    with style.charting() as plt:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(max(8, 0.32 * len(rows) + 5), 4), width_ratios=[3, 1.4])
        x = range(len(rows))
        ax.bar(x, [max(e.rel, 1e-6) for e in rows], color=[style.CULPRIT if e.name in kept else style.SERIES_2 for e in rows])
        ax.set_yscale("log")
        ax.set_xticks(list(x), [e.name.removeprefix("model.") + (" *" if e.name in kept else "") for e in rows],
                      rotation=70, fontsize=7)
        ax.set_ylabel("local error (max |err| / max |out|)")
        ax.set_title(f"layers by INT8 error, naive graph ({result.method}); * kept out of INT8", fontsize=9)
        trials = result.decision.trials if result.decision else []
        bx.plot([len(k) for k, _ in trials], [d for _, d in trials], "o", color=style.SERIES,
                label=f"trials ({result.search_images} images)")
        bx.plot([len(result.kept)], [result.damage], "s", ms=8, color=style.PRIMARY_DARK,
                label=f"final ({result.counts['val']} images)")
        _limits(bx, result)
        bx.xaxis.set_major_locator(MaxNLocator(integer=True))
        bx.set_xlabel("layers kept out of INT8")
        bx.legend(fontsize=7)
        fig.tight_layout()
        return _png(plt, fig)


def groups_png(result: Any) -> bytes:
    """Per candidate group: damage with only it in INT8, and with it kept out of INT8;
    lines at the naive INT8 damage and at the budget; kept groups marked."""
    rows = result.sensitivity
    names = [s.group + (" *" if s.group in result.kept else "") for s in rows]
    x = range(len(rows))
    with style.charting() as plt:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 3), 4))
        ax.bar([i - 0.2 for i in x], [s.alone or 0 for s in rows], 0.4, label="only this group in INT8",
               color=style.SERIES_2)
        ax.bar([i + 0.2 for i in x], [s.kept for s in rows], 0.4, label="all but this group in INT8", color=style.SERIES)
        _limits(ax, result)
        ax.set_xticks(list(x), names, rotation=15, fontsize=8)
        ax.set_title(f"INT8 sensitivity ({result.method}); * kept in higher precision; final {result.damage:.2f}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return _png(plt, fig)


def _limits(ax: Any, result: Any) -> None:
    """The damage of everything in INT8 and the budget, drawn as every chart draws them."""
    naive = result.naive.damage(result.reference) if result.naive else None
    if naive is not None:
        ax.axhline(naive, color=style.MARKER, linestyle=":", lw=1, label=f"everything INT8 ({naive:.2f})")
    ax.axhline(result.budget, color=style.BUDGET, linestyle="--", lw=1, label=f"budget ({result.budget:g})")
    unit = "mAP50-95 points" if result.reference.map50_95 is not None else "disagreement %"
    ax.set_ylabel(f"damage ({unit})")


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
