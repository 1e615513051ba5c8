"""The documentation site: it builds strictly, and its examples run as written.

Every ```bash block of every page in mkdocs.yml's nav runs, page by page in a fresh folder
(the demo models and example block files beside it), in order: a page's later commands read
what its earlier ones wrote. A ```text block right after a ```bash block lists what the last
command of that block prints: each of its lines must appear in that output, compared with the
table borders and runs of spaces taken out. Plain ``` blocks are illustrations (a user's own
best.pt and data.yaml) and are not run.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attn_deploy.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BORDERS = re.compile(r"[│┃┏┓┗┛┡┩┣┫━─╇╈┳┻╋┯┷┼┠┨└┘┌┐├┤┬┴]+")


def nav_pages() -> list[str]:
    """The pages in the order the site lists them."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def walk(items):
        for item in items:
            for value in item.values():
                yield from (walk(value) if isinstance(value, list) else [value])

    return list(walk(nav))


def examples(page: str) -> list[tuple[list[str], list[str]]]:
    """(commands, expected lines of the last command's output) per ```bash block of a page."""
    text = (DOCS / page).read_text()
    out = []
    for m in re.finditer(r"```bash\n(.*?)```(?:\s*```text\n(.*?)```)?", text, re.S):
        commands = [line.split("  #")[0].strip() for line in m.group(1).splitlines()]
        expected = [line.strip() for line in (m.group(2) or "").splitlines() if line.strip()]
        out.append(([c for c in commands if c], expected))
    return out


def flat(text: str) -> str:
    return " ".join(BORDERS.sub(" ", text).split())


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert all(f"attn-deploy {verb}" in cli for verb in ("export", "lint", "calib", "qat", "build", "serve", "ship", "targets"))
    assert "--min-int8" in cli and "--target" in cli  # every option, from click itself
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "export_model" in api and "write the ONNX file and its sidecar" in api  # from the docstring
    matrix = (tmp_path / "site" / "results" / "targets" / "index.html").read_text()
    assert "yolo26n:end2end" in matrix  # the generated table, included


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    pages = nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk
    assert len(pages) >= 25 and pages[1:6] == [f"start/{p}.md" for p in
                                               ("yolov5-fork", "ultralytics", "own-blocks", "jetson-int8", "triton")]


def test_every_start_page_has_runnable_examples() -> None:
    for page in nav_pages():
        if page.startswith("start/"):
            blocks = examples(page)
            assert blocks and all(cmds for cmds, _ in blocks), page
            assert any(expected for _, expected in blocks), f"{page} shows no output to check"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in nav_pages() if examples(p)])
def test_page_examples_run_as_written(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").symlink_to(ROOT / "demo")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for commands, expected in examples(page):
        output = ""
        for command in commands:
            output = run(command)
        for line in expected:
            assert flat(line) in flat(output), (page, commands[-1], line, output[-2000:])


def run(command: str) -> str:
    words = shlex.split(command)
    if words[0] == "python":  # python -m MODULE ARGS: the module's main, in this process
        assert words[1] == "-m", command
        with pytest.raises(SystemExit) as done:
            importlib.import_module(words[2]).main(words[3:])
        assert done.value.code in (0, None), command
        return ""
    assert words[0] == "attn-deploy", command
    result = CliRunner().invoke(main, words[1:])
    assert result.exit_code == 0, (command, result.output[-2000:])
    return result.stdout


def all_commands() -> list[tuple[str, str]]:
    """(page, command) for every attn-deploy command in any code block of the docs and the README,
    run or not: the illustrations too (a user's best.pt, data.yaml)."""
    out = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("attn-deploy "):
                    out.append((str(path.relative_to(ROOT)), line))
    return out


def cli_problem(command: str) -> str | None:
    """Why the command line would refuse ``command`` before running it (unknown verb or option,
    a stray argument, a choice not offered), or None. The parser alone: no callback runs."""
    import click

    words = shlex.split(command, comments=True)[1:]
    while words and words[0] == "--verbose":
        words = words[1:]
    if not words or words[0] not in main.commands:
        return f"no verb {words[:1]}"
    verb = main.commands[words[0]]
    try:
        raw, extra, _ = verb.make_parser(click.Context(verb, info_name=words[0])).parse_args(words[1:])
    except click.ClickException as e:
        return e.format_message()
    if extra:
        return f"arguments nobody takes: {extra}"
    for param in verb.params:
        value = raw.get(param.name)
        if isinstance(param.type, click.Choice) and value is not None:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in param.type.choices]
            if bad:
                return f"{param.name} {bad} is not one of {list(param.type.choices)}"
    return None


def test_the_command_check_catches_drift() -> None:
    assert "No such option '--blocks'" in cli_problem("attn-deploy blocks --blocks a.py")
    assert "is not one of" in cli_problem("attn-deploy calib x.onnx --precision int4")
    assert "no verb" in cli_problem("attn-deploy exprot --model yolov5n")
    assert cli_problem("attn-deploy --verbose export --weights best.pt --blocks b.py --imgsz 320  # a comment") is None


def test_every_command_in_the_docs_is_one_the_cli_takes() -> None:
    """Commands shown but not run (they name the user's files) still name real verbs, options
    and choices: the docs cannot drift from the command line."""
    commands = all_commands()
    assert len(commands) > 60
    wrong = [f"{page}: {command} ({why})" for page, command in commands if (why := cli_problem(command))]
    assert not wrong, "\n".join(wrong)


def test_results_pages_show_only_generated_tables() -> None:
    """A results page types no table: it includes what a benchmark script wrote, stamped with
    the script, the date and the versions."""
    for page in ("results/precision.md", "results/targets.md"):
        text = (DOCS / page).read_text()
        assert not [line for line in text.splitlines() if line.startswith("|")], page
        included = re.findall(r'^--8<-- "(.+)"$', text, re.M)
        assert included, page
        for path in included:
            generated = (ROOT / path).read_text()
            assert "Measured by `benchmarks/" in generated and re.search(r"\d{4}-\d\d-\d\d", generated), path
