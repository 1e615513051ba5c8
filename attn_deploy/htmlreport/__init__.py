"""Reports a person opens in a browser: one self-contained HTML file (every image embedded as
a data URI, no script, no network, so it opens on an air-gapped Jetson) plus the same
results as JSON. The page comes from a jinja2 template, the plots from matplotlib (Agg)."""

from attn_deploy.htmlreport.page import Figure, Page, Section, Table, from_rich, write_report

__all__ = ["Figure", "Page", "Section", "Table", "from_rich", "write_report"]
