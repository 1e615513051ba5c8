"""The command line: JSON on stdout, one-line errors with exit code 2, --help everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attn_deploy.cli import main
from attn_deploy.models import list_attention


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_models_json() -> None:
    code, out, _ = run("models", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["attention"] == list_attention()
    assert "yolov5s-ca" in doc["models"] and "yolov5x" in doc["models"] and len(doc["models"]) == 325


def test_models_table_lists_every_key() -> None:
    code, out, _ = run("models")
    assert code == 0 and all(k in out for k in list_attention()) and "CoordAtt" in out


def test_info_json_reports_exact_params_and_gflops() -> None:
    code, out, _ = run("info", "--model", "yolov5s", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["params"] == 7_235_389 and abs(doc["gflops"] - 16.5) / 16.5 < 0.03
    assert len(doc["layers"]) == 25 and doc["layers"][-1]["shape"] == [1, 25200, 85]


def test_info_table_and_rectangular_size() -> None:
    code, out, _ = run("info", "--model", "yolov5n-ca", "--imgsz", "320,256")
    assert code == 0 and "yolov5n-ca" in out and "1x5040x85" in out.replace(" ", "")


@pytest.mark.parametrize(
    "args,message",
    [
        (["info", "--model", "yolov5s-foo"], "unknown model 'yolov5s-foo'"),
        (["info", "--model", "yolov5q"], "unknown model 'yolov5q'"),
        (["info", "--weights", "missing.pt"], "weights file not found: missing.pt"),
        (["info"], "no model given"),
        (["info", "--model", "yolov5n", "--imgsz", "330"], "not a multiple of the model's stride 32"),
        (["info", "--model", "yolov5n", "--cfg", "x.yaml"], "give --model or --cfg, not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2 and out == "" and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_weights_and_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04not a checkpoint")
    code, _, err = run("info", "--weights", str(bad))
    assert code == 2 and "not a PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1
    y = tmp_path / "m.yaml"
    y.write_text("nc: 1\nanchors: 3\nbackbone: [[-1, 1, Nope, [64]]]\nhead: []\n")
    code, _, err = run("info", "--cfg", str(y))
    assert code == 2 and "row 0 (Nope): unknown module 'Nope'" in err


def test_every_verb_has_help() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for verb in main.commands:
        code, out, _ = run(verb, "--help")
        assert code == 0 and "Usage" in out, verb


def test_bare_command_prints_the_help() -> None:
    code, out, err = run()
    assert code == 0 and out.startswith("Usage: ") and "export" in out and err == ""
