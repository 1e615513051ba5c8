"""--report: one self-contained HTML page (checked in a real headless Chromium) and its JSON."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from browser import open_report, why_no_browser
from click.testing import CliRunner

from attn_deploy.cli import main
from attn_deploy.data import style
from attn_deploy.exporter.export import export_model
from attn_deploy.exporter.torch2onnx import ExportSpec
from attn_deploy.htmlreport import Page, Section, Table, from_rich, write_report
from attn_deploy.models import load_model
from attn_deploy.models.zoo import create_model

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "yolov5n-ca-shapes.pt"


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A parity report of the demo against a copy with its attention block damaged, a calib
    report and a bench report: the three verbs that write one."""
    import torch

    from attn_deploy.train.shapes import write_dataset

    root = tmp_path_factory.mktemp("reports")
    data = write_dataset(root / "shapes", train=6, val=8)
    net = load_model(None, None, str(DEMO))
    with torch.no_grad():
        w = net.model[9].conv_h.weight
        w[3, 0, 0, 0] += 8 * w.abs().max()
    export_model(net, root / "damaged.onnx", ExportSpec((320, 320)), check=False)
    code, _, err = cli("parity", "--weights", str(DEMO), "--against", str(root / "damaged.onnx"), "--data", str(data),
                       "--per-block", "--block-images", "4", "--report", str(root / "parity"))
    assert code in (0, 1) and "report written to" in err, err
    export_model(load_model(None, None, str(DEMO)), root / "demo.onnx", ExportSpec((320, 320)), check=False)
    code, _, err = cli("calib", str(root / "demo.onnx"), "--precision", "int8", "--data", str(data), "--images", "4",
                       "--max-map-drop", "0", "--report", str(root / "calib"))
    assert code in (0, 1) and "report written to" in err, err
    small = create_model("yolov5n-ca", nc=5)
    export_model(small, root / "small.onnx", ExportSpec((64, 64)), check=False)
    code, _, err = cli("bench", str(root / "small.onnx"), "--iterations", "5", "--warmup", "0.1", "--report", str(root / "bench"))
    assert code == 0, err
    return {k: root / k for k in ("parity", "calib", "bench")}


def test_parity_report_holds_the_verdict_blocks_and_pictures(reports: dict[str, Path]) -> None:
    doc = json.loads((reports["parity"] / "report.json").read_text())
    html = (reports["parity"] / "report.html").read_text()
    assert doc["culprit"] == 9 and len(doc["blocks"]) == 26
    assert "culprit: layer 9" in html and '<tr class="culprit">' in html and html.count('<tr class="attention">') == 0
    # gates, tensor table, histograms, block chart, detections: every picture embedded
    for heading in ("Verdict and gates", "Tensors and detections", "Errors of matched detections", "Per-block error",
                    "Detections, one over the other"):
        assert heading in html
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) >= 2 + 6
    assert not re.search(r"(src|href)=\"(https?:|//)", html) and "<script" not in html and "<link" not in html
    assert "mAP50-95 reference / candidate" in html  # labelled data: both sides' mAP


def test_calib_and_bench_reports(reports: dict[str, Path]) -> None:
    calib = (reports["calib"] / "report.html").read_text()
    assert "Accuracy: FP32, FP16, INT8" in calib and "INT8 sensitivity" in calib
    assert json.loads((reports["calib"] / "report.json").read_text())["precision"] == "int8"
    bench = (reports["bench"] / "report.html").read_text()
    assert "Latency and throughput" in bench and bench.count("data:image/png;base64,") == 1
    assert json.loads((reports["bench"] / "report.json").read_text())["results"][0]["iterations"] == 5


def test_report_escapes_text_and_a_file_in_the_way_is_one_line(tmp_path: Path) -> None:
    page = Page("<b>x</b>", False, sections=[Section("s", tables=[Table(["h"], [["<script>alert(1)</script>"]])])])
    html = write_report(tmp_path / "r", page, {}).read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli("bench", "yolov5n", "--imgsz", "64", "--iterations", "1", "--warmup", "0", "--report", str(blocker))
    assert code == 2 and "is a file" in err and "Traceback" not in err  # refused before any work
    code, _, err = cli("bench", "yolov5n", "--imgsz", "64", "--iterations", "1", "--warmup", "0",
                       "--report", str(blocker / "sub"))
    assert code == 2 and err.startswith("attn-deploy: error: cannot write the report") and err.count("\n") == 1


def test_rich_tables_convert_cell_for_cell() -> None:
    from rich.table import Table as RichTable

    t = RichTable(title="t")
    t.add_column("a")
    t.add_column("b")
    t.add_row("[green]pass[/]", "2")
    assert from_rich(t) == Table(["a", "b"], [["pass", "2"]], "t")


@pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))
@pytest.mark.parametrize("kind", ["parity", "calib", "bench"])
def test_report_opens_in_chromium(kind: str, reports: dict[str, Path], tmp_path: Path) -> None:
    html = reports[kind] / "report.html"
    seen = open_report(html, tmp_path / "shot.png")
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.requests == [html.resolve().as_uri()]  # nothing but the file itself: no network, no CDN
    assert seen.images and all(i["complete"] and i["width"] > 0 and i["src"].startswith("data:image/png") for i in seen.images)
    shot = seen.screenshot
    assert shot is not None and shot.shape[0] > 400 and shot.std() > 20
    assert len(np.unique(shot.reshape(-1, 3)[::97], axis=0)) > 50  # a page with content, not a blank one
    assert seen.title.startswith(kind)


# ---- one look: the report, its charts and the site read the same values (data/style.py) ----


def figures(html: str) -> dict[str, bytes]:
    """The report's embedded pictures, by caption."""
    return {alt: base64.b64decode(data) for data, alt in
            re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', html)}


def pixels(png: bytes, colour: str, tol: int = 6) -> int:
    """How many pixels of ``png`` are ``colour`` (within ``tol`` per channel: antialiasing)."""
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)
    return int((np.abs(image - style.rgb(colour)).max(-1) <= tol).sum())


def site_config() -> dict:
    class Loader(yaml.SafeLoader):  # mkdocs.yml may hold !!python/name and !ENV tags: read past them
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_the_report_and_the_site_share_one_palette(tmp_path: Path) -> None:
    html = write_report(tmp_path / "r", Page("t", False, sections=[Section("s")]), {}).read_text()
    css = html[html.index("<style>"):html.index("</style>")]
    for value in (style.PRIMARY, style.PRIMARY_DARK, style.ACCENT, style.PASS, style.FAIL, style.NEUTRAL, style.FONT):
        assert value in css, value
    assert "background: var(--primary)" in css and '<span class="verdict fail">' in html  # the teal app bar, the badge
    theme = site_config()["theme"]
    assert theme["palette"] == {"primary": "teal", "accent": "amber"} and theme["font"] is False
    extra = [ROOT / "docs" / p for p in site_config()["extra_css"]]
    assert any(all(v in p.read_text() for v in (style.PASS, style.FAIL, style.NEUTRAL)) for p in extra)
    for chart, colours in (("target-matrix.png", (style.PRIMARY_DARK, style.PRIMARY_PALE, style.ACCENT)),
                           ("per-block-int8.png", (style.SERIES, style.SERIES_2, style.BUDGET))):
        png = (ROOT / "docs" / "results" / chart).read_bytes()
        assert all(pixels(png, c, 40) > 20 for c in colours), chart


@pytest.mark.skipif(importlib.util.find_spec("material") is None, reason="mkdocs-material is not installed")
def test_the_palette_is_materials_own() -> None:
    """style.py's teal, amber and fonts are the ones Material for MkDocs gives mkdocs.yml's names."""
    folder = Path(importlib.util.find_spec("material").origin).parent / "templates" / "assets" / "stylesheets"
    palette = next(folder.glob("palette.*.min.css")).read_text()
    theme = site_config()["theme"]["palette"]
    primary = re.search(rf"\[data-md-color-primary={theme['primary']}\]{{--md-primary-fg-color:(#\w+)", palette)
    accent = re.search(rf"\[data-md-color-accent={theme['accent']}\]{{--md-accent-fg-color:(#\w+)", palette)
    assert style.rgb(primary[1]) == style.rgb(style.PRIMARY) and style.rgb(accent[1]) == style.rgb(style.ACCENT)
    main_css = next(folder.glob("main.*.min.css")).read_text()
    fonts = re.search(r"--md-text-font-family:var\(--md-text-font, _\),\s*([^;}]+)", main_css)
    assert " ".join(fonts[1].split()) == style.FONT


def test_the_charts_draw_in_the_palette(reports: dict[str, Path]) -> None:
    parity = figures((reports["parity"] / "report.html").read_text())
    blocks = next(png for alt, png in parity.items() if alt.startswith("per-block"))
    assert pixels(blocks, style.SERIES, 0) > 30 and pixels(blocks, style.SERIES_2, 0) > 200  # accumulated, local
    assert pixels(blocks, style.CULPRIT, 0) > 100 and pixels(blocks, "#4C72B0", 30) == 0  # layer 9; no old blue
    histograms = next(png for alt, png in parity.items() if "matched pairs" in alt)
    assert pixels(histograms, style.SERIES, 0) > 500
    calib = figures((reports["calib"] / "report.html").read_text())
    (sensitivity,) = calib.values()
    assert pixels(sensitivity, style.SERIES_2, 0) > 200 and pixels(sensitivity, style.BUDGET, 40) > 20  # thin: blended
