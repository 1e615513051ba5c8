"""The sensitivity chart of an INT8 calibration (matplotlib, Agg)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from attn_deploy.files import atomic_write


def sensitivity_chart(result: Any, path: Path) -> Path:
    """The chart below, written to ``path``."""
    return atomic_write(path, sensitivity_png(result))


def sensitivity_png(result: Any) -> bytes:
    """Per candidate group: damage with only it in INT8, and with it kept out of INT8;
    lines at the naive INT8 damage and at the budget; kept groups marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.sensitivity
    names = [s.group + (" *" if s.group in result.kept else "") for s in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 3), 4))
    ax.bar([i - 0.2 for i in x], [s.alone or 0 for s in rows], 0.4, label="only this group in INT8", color="#C44E52")
    ax.bar([i + 0.2 for i in x], [s.kept for s in rows], 0.4, label="all but this group in INT8", color="#4C72B0")
    naive = result.naive.damage(result.reference) if result.naive else None
    if naive is not None:
        ax.axhline(naive, color="grey", linestyle=":", label=f"everything INT8 ({naive:.2f})")
    ax.axhline(result.budget, color="green", linestyle="--", label=f"budget ({result.budget:g})")
    ax.set_xticks(list(x), names, rotation=15, fontsize=8)
    unit = "mAP50-95 points" if result.reference.map50_95 is not None else "disagreement %"
    ax.set_ylabel(f"damage ({unit})")
    ax.set_title(f"INT8 sensitivity ({result.method}); * kept in higher precision; final {result.damage:.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
