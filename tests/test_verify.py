"""``verify --fork DIR`` and ``ship --fork DIR``: our rebuild against the fork's own code, run
on the checkpoint in a separate process (the stand-in fork in ``tests/forks/yolov5``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import yolov5_standin as y5
from attn_deploy.cli import main
from test_checkpoint import fork_cfg, saved

FORK = str(y5.FORK)
# every CBAM, SE and CA variant the registry reads, as its source writes it
VARIANTS = ["CBAM", "CBAM/yolov5", "CBAM/official", "CBAMBlock", "SE", "SEAttention", "SELayer", "CA", "CoordAtt"]


@pytest.fixture(scope="module", autouse=True)
def standin() -> None:
    y5.install()
    yield
    y5.uninstall()


def _weighed_apart(net: torch.nn.Module) -> torch.nn.Module:
    """A trained-looking spatial gate where the layer has one: its two planes weighed apart."""
    for m in net.model[9].modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels == 2:
            with torch.no_grad():
                m.weight[:, 0] = m.weight[:, 0].abs() * 20
                m.weight[:, 1] = -m.weight[:, 1].abs() * 20
    return net


def verify(path: Path, *extra: str) -> tuple[int, dict, str]:
    r = CliRunner().invoke(main, ["verify", "--weights", str(path), "--fork", FORK, "--imgsz", "128", "--json", *extra])
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_equals_the_forks_own_model(tmp_path: Path, variant: str) -> None:
    path = saved(tmp_path, _weighed_apart(y5.randomize(y5.DetectionModel(fork_cfg(variant)))))
    code, doc, err = verify(path)
    assert code == 0, err
    layer9 = doc["layers"][9]
    assert layer9["error"]["rel"] < 1e-5 and layer9["fork_class"] == variant.split("/")[0], layer9
    assert doc["compared"] == 25 and doc["first_difference"] is None  # every layer but Detect's tuple
    assert doc["boxes"]["max_abs"] < 1e-3 and doc["scores"]["max_abs"] < 1e-5


def test_a_wrong_reading_is_named_at_its_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule that missed the tutorial CBAM's ca.f1, brought back: verify names layer 9, the
    first layer that differs, though every layer before it agrees."""
    from attn_deploy.models.attention import cbam

    path = saved(tmp_path, _weighed_apart(y5.randomize(y5.DetectionModel(fork_cfg("CBAM/yolov5")))))
    monkeypatch.setattr(cbam, "_SOURCES", tuple(s for s in cbam._SOURCES if s[0] != "f1"))
    code, doc, err = verify(path)
    assert code == 1 and doc["first_difference"] == 9, err
    assert all(layer["error"]["rel"] < 1e-5 for layer in doc["layers"][:9])  # float noise: threads may differ
    assert "layer 9 (CBAM, the fork's CBAM) is the first that differs" in err
    assert doc["readings"][-1]["evidence"] is None  # the guess that was wrong, as the sidecar keeps it


def test_the_dill_fork_with_a_block_file_verifies(tmp_path: Path) -> None:
    import fork_fasternet as faster

    path = faster.save(tmp_path / "best.pt", faster.model())
    code, doc, err = verify(path, "--blocks", str(faster.BLOCKS))
    assert code == 0, err
    assert [doc["layers"][i]["module"] for i in faster.FASTER_ROWS] == ["C3Faster"] * 4
    assert max(layer["error"]["rel"] for layer in doc["layers"] if "error" in layer) < 1e-5


def test_ship_verifies_first_and_stops_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attn_deploy.models.attention import cbam

    path = saved(tmp_path, _weighed_apart(y5.randomize(y5.DetectionModel(fork_cfg("CBAM/yolov5")))))
    monkeypatch.setattr(cbam, "_SOURCES", tuple(s for s in cbam._SOURCES if s[0] != "f1"))
    out = tmp_path / "ship"
    r = CliRunner().invoke(main, ["ship", "--weights", str(path), "--fork", FORK, "--precision", "fp32",
                                  "--imgsz", "128", "-o", str(out), "--json"])
    assert r.exit_code == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["failed"] == "verify" and {s["name"]: s["status"] for s in doc["steps"]}["export"] == "not run"
    assert json.loads((out / "verify.json").read_text())["first_difference"] == 9
    assert not list(out.glob("*.onnx"))


@pytest.mark.parametrize("case,needle", [
    ("empty fork", "could not run best.pt: ModuleNotFoundError: No module named 'models'"),
    ("fork that raises", "could not run best.pt: RuntimeError: the fork broke"),
    ("no such python", "--python"),
])
def test_a_fork_that_cannot_run_is_one_line(tmp_path: Path, case: str, needle: str) -> None:
    from test_hostile import refused

    saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg("SE"))))
    fork = tmp_path / "fork"
    fork.mkdir()
    extra = []
    if case == "fork that raises":
        (fork / "models").mkdir()
        (fork / "models" / "__init__.py").write_text("raise RuntimeError('the fork broke')\n")
    if case == "no such python":
        extra = ["--python", str(tmp_path / "nowhere" / "python")]
    (tmp_path / "fork").mkdir(exist_ok=True)
    refused(tmp_path, ["verify", "--weights", "best.pt", "--fork", "fork", "--imgsz", "64", *extra], needle)
