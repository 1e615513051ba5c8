"""Every submodule imports; the CLI starts without loading ONNX Runtime, onnx or TensorRT."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import attn_deploy


def test_every_submodule_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(attn_deploy.__path__, "attn_deploy.")]
    assert len(names) > 30
    for name in names:
        importlib.import_module(name)


def test_cli_help_loads_no_heavy_runtime() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from attn_deploy.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0;"
        "[CliRunner().invoke(main, [v, '--help']) for v in main.commands];"
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'onnxslim', 'tensorrt', 'modelopt', 'polygraphy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
