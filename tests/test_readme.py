"""The README's examples run, as written, and its claims about set-up hold."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from attn_deploy.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def example_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(("attn-deploy ", "python -m attn_deploy."))]


def test_readme_has_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "pip install torch==2.13.0 && pip install -e . && attn-deploy export --model yolov5s-ca" in text
    assert "```bash\ntests/run.sh\n```" in text  # the one test command ...
    assert "exec tests/run.sh" in (README.parent / ".ci" / "run").read_text()  # ... is what CI runs
    run = (README.parent / "tests" / "run.sh").read_text()
    assert 'pip install -q -e ".[dev]"' in run and "python -m pytest" in run


@pytest.mark.slow
def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").symlink_to(README.parent / "demo")  # the examples name the shipped demo model
    (tmp_path / "examples").symlink_to(README.parent / "examples")  # and the example block file
    commands = example_commands()
    assert "attn-deploy export --model yolov5s-ca" in commands
    for command in commands:  # in order: lint reads what export wrote
        words = shlex.split(command)
        if words[0] == "python":  # python -m MODULE ARGS: the module's main, in this process
            with pytest.raises(SystemExit) as done:
                importlib.import_module(words[2]).main(words[3:])
            assert done.value.code in (0, None), command
            continue
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == 0, (command, result.stderr)
