"""One look for the documentation site, the HTML report and every chart.

The site is Material for MkDocs with ``primary: teal`` and ``accent: amber`` and no web fonts
(mkdocs.yml); these are the colours Material 9 gives those names (its palette.css:
``--md-primary-fg-color`` and ``--md-accent-fg-color``) and the system font stack it falls
back to, so the report (``htmlreport/report.html.j2``), the charts (``htmlreport/plots.py``,
``calib/chart.py``, the benchmark scripts) and ``docs/stylesheets/extra.css`` read one set
of values; ``tests/test_report.py`` holds them to mkdocs.yml, Material's own CSS and
extra.css. Each chart colour has one meaning wherever it is drawn.

It sits in ``data`` (the lowest layer) because calib draws too and imports point down; it
imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Material for MkDocs' palette: teal (500, light, dark), amber accent, text and rules
PRIMARY = "#009485"
PRIMARY_LIGHT = "#26a699"
PRIMARY_DARK = "#007a6c"
PRIMARY_PALE = "#e0f2f1"  # Material teal 50: the lightest tint, for backgrounds and colour scales
ACCENT = "#ffaa00"
TEXT = "#000000de"
TEXT_LIGHT = "#0000008a"
RULE = "#0000001f"  # Material's table borders (--md-typeset-table-color)
PAGE = "#f5f5f5"  # Material's code background: the report's page behind white cards
CARD = "#ffffff"
FONT = "-apple-system, BlinkMacSystemFont, Helvetica, Arial, sans-serif"  # Material without web fonts
MONO = "SFMono-Regular, Consolas, Menlo, monospace"

# verdicts: white text on each reads at a contrast of 5:1 or more
PASS = "#2e7d32"
FAIL = "#c62828"
NEUTRAL = "#546e7a"

# chart colours, one meaning each
SERIES = PRIMARY  # the first series: accumulated error, trials, histograms
SERIES_2 = ACCENT  # the second: local error (a layer's, or a group's own damage)
ATTENTION = "#7e57c2"  # attention blocks: shaded in charts, tinted rows in tables
CULPRIT = FAIL  # the layer blamed: the culprit, the layers kept out of INT8
BUDGET = PASS  # a limit to stay under: the damage budget, the culprit tolerance (dashed)
FLOOR = FAIL  # a limit to stay over: the least share of MACs in INT8 (dotted)
MARKER = "#37474f"  # reference lines: everything in INT8, the 99th percentile (dotted)

# boxes drawn on report images (RGB): reference, candidate, missed, extra
REFERENCE_BOX, CANDIDATE_BOX, MISSED_BOX, EXTRA_BOX = (46, 160, 67), (31, 119, 180), (214, 39, 40), (230, 0, 230)

CHART_RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["Helvetica", "Arial", "Liberation Sans", "DejaVu Sans"],  # FONT, as installed
    "text.color": TEXT, "axes.labelcolor": TEXT, "xtick.color": TEXT_LIGHT, "ytick.color": TEXT_LIGHT,
    "axes.edgecolor": "#bdbdbd", "axes.titleweight": "bold", "axes.titlecolor": TEXT,
    "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#e0e0e0", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "legend.frameon": False, "figure.facecolor": CARD, "savefig.facecolor": CARD,
}


def rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` (or ``#rgb``) as 0-255 integers."""
    h = colour.lstrip("#")
    h = "".join(c * 2 for c in h) if len(h) in (3, 4) else h
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def css_vars() -> dict[str, str]:
    """The report's CSS custom properties (``--primary`` ...), from the values above."""
    return {"primary": PRIMARY, "primary-light": PRIMARY_LIGHT, "primary-dark": PRIMARY_DARK,
            "primary-pale": PRIMARY_PALE, "accent": ACCENT, "text": TEXT, "text-light": TEXT_LIGHT,
            "rule": RULE, "page": PAGE, "card": CARD, "pass": PASS, "fail": FAIL, "neutral": NEUTRAL,
            "attention-tint": ATTENTION + "1f", "culprit-tint": CULPRIT + "24", "font": FONT, "mono": MONO}


@contextmanager
def charting() -> Iterator[Any]:
    """pyplot (Agg: no display) under the palette's settings, for drawing and saving a chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    with plt.rc_context({**CHART_RC, "axes.prop_cycle": cycler(color=[SERIES, SERIES_2, ATTENTION, MARKER])}):
        yield plt
