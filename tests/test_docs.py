"""The documentation site: it builds strictly, and every code block of its pages runs.

Every fenced block of a page in mkdocs.yml's nav (but the generated results pages) is one of
these, so that no example can drift from the code:

- ```bash: commands, run in order, page by page in a fresh folder with the repository's
  ``demo/``, ``examples/`` and ``tests/`` linked in; a page's later blocks read what its earlier
  ones wrote. ``attn-deploy ...`` runs through click's CliRunner in this process, ``python -m
  MODULE ...`` through the module's ``main``, ``python FILE.py ...`` in a subprocess, ``cat
  FILE`` and ``ls PATH...`` in Python (no shell). Each must exit 0, or the code its trailing
  comment ends with (``# Mod refused: exit 1``). A line that starts with ``#`` is not run: the
  reader's own best.pt goes there (``# your best.pt: attn-deploy ...``), beside the demo's.
- ```python: run by this Python in a subprocess, in the page's folder after the blocks above
  it; it must exit 0. A fragment must still execute.
- ```text right after either: lines that must appear in what the last command printed (stdout
  and stderr; a python block's stdout), compared with table borders and runs of spaces taken
  out; the tables print 200 columns wide, so no cell wraps where a figure decides. A block
  titled with "figures" (```text title="Output (figures from one run)") holds figures that vary
  between machines and runs: both sides are compared with every number and hash masked, so its
  words and structure are checked, not its digits.
- A block that needs what CI may lack is preceded by ``<!-- needs: NEED -->`` (``tensorrt``,
  ``dla``, a target's name such as ``orin-jp6``, ``tritonserver``, ``ultralytics``,
  ``network``). Where the need is met it runs in its place; elsewhere it is left out, the
  page's later blocks still run, and the page's test then skips, naming each block left out
  and what to install for it.

Every ``attn-deploy`` line of any block of the docs and the README, commented out or not
(``# your best.pt: attn-deploy ...``), is also put through the command line's own parser
(``cli_problem``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attn_deploy.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BORDERS = re.compile(r"[│┃┏┓┗┛┡┩┣┫━─╇╈┳┻╋┯┷┼┠┨└┘┌┐├┤┬┴]+")
FENCE = re.compile(r"^(?:<!-- needs: (?P<needs>[\w.-]+) -->\n(?:[ \t]*\n)*)?"
                   r"```(?P<lang>\w*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HASH = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,}\b")  # sha256 prefixes
NUMBER = re.compile(r"[-+−]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
RUNNABLE = ("bash", "python")


@dataclass
class Block:
    """One runnable fence of a page, with the output the page shows after it."""

    page: str
    line: int
    lang: str
    code: str
    needs: str | None = None
    expected: list[str] = field(default_factory=list)
    figures: bool = False  # numbers masked in the comparison

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def nav_pages() -> list[str]:
    """The pages in the order the site lists them."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def walk(items):
        for item in items:
            for value in item.values():
                yield from (walk(value) if isinstance(value, list) else [value])

    return list(walk(nav))


def fences(text: str) -> list[tuple[int, re.Match[str]]]:
    """(line number, match) of every fenced block of a page's text, in order."""
    return [(text.count("\n", 0, m.start("lang")) + 1, m) for m in FENCE.finditer(text)]


def blocks(page: str) -> list[Block]:
    """The page's runnable blocks, each with the ```text block that follows it, if any."""
    out: list[Block] = []
    text = (DOCS / page).read_text()
    previous_end = -1
    for line, m in fences(text):
        lang, attrs = m.group("lang"), m.group("attrs")
        if lang in RUNNABLE:
            out.append(Block(page, line, lang, m.group("body"), m.group("needs")))
        elif lang == "text" and out and not text[previous_end:m.start()].strip():
            out[-1].expected = [x.strip() for x in m.group("body").splitlines() if x.strip()]
            out[-1].figures = "figures" in attrs.lower()
        previous_end = m.end()
    return out


def examples(page: str) -> list[tuple[list[str], list[str]]]:
    """(commands, expected lines) per ```bash block of a page: the start pages' check."""
    return [(commands(b.code), b.expected) for b in blocks(page) if b.lang == "bash"]


def commands(code: str) -> list[str]:
    """A bash block's command lines, comments included (the run skips them)."""
    return [line.strip() for line in code.splitlines() if line.strip()]


def flat(text: str) -> str:
    return " ".join(BORDERS.sub(" ", text).split())


def masked(text: str) -> str:
    """Every number (signs, decimal points, exponents) and every hash prefix as one '#'."""
    return NUMBER.sub("#", HASH.sub("#", text))


def shows(output: str, expected: list[str], figures: bool) -> list[str]:
    """The expected lines the output does not show."""
    same = masked if figures else str
    printed = flat(same(output))
    return [line for line in expected if flat(same(line)) not in printed]


# ---- the commands -------------------------------------------------------------------------


def parse(line: str) -> tuple[str, int]:
    """A block line's command (empty for a comment line) and the exit code it expects."""
    command, _, comment = line.partition("  #")
    if command.lstrip().startswith("#"):
        return "", 0
    code = re.search(r"\bexit (\d+)$", comment.strip())  # the comment's last words
    return command.strip(), int(code.group(1)) if code else 0


def run(command: str, exit_code: int = 0) -> str:
    """Run one command of a bash block in the current folder; what it printed (stdout, stderr)."""
    words = shlex.split(command)
    if words[0] == "attn-deploy":
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == exit_code, (command, result.output[-3000:])
        return result.output
    if words[0] == "cat":
        return "".join(Path(w).read_text() for w in words[1:])
    if words[0] == "ls":
        return listing(words[1:])
    assert words[0] == "python", f"not a command the docs' test runs: {command}"
    if words[1] == "-m":  # python -m MODULE ARGS: the module's main, in this process
        return module_main(command, words[2], words[3:], exit_code)
    done = subprocess.run([sys.executable, *words[1:]], check=False, capture_output=True, text=True)
    assert done.returncode == exit_code, (command, done.stderr[-3000:])
    return done.stdout + done.stderr


def module_main(command: str, module: str, argv: list[str], exit_code: int) -> str:
    out = io.StringIO()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            importlib.import_module(module).main(argv)
        except SystemExit as e:
            code = e.code
    assert (code or 0) == exit_code, (command, out.getvalue()[-3000:])
    return out.getvalue()


def listing(paths: list[str]) -> str:
    """``ls PATH...``, one name a line: a folder's entries, sorted; a file's own path."""
    parts = []
    for p in paths or ["."]:
        path = Path(p)
        assert path.exists(), f"ls: {p}: no such file or folder"
        names = sorted(x.name for x in path.iterdir()) if path.is_dir() else [p]
        head = f"{p}:\n" if len(paths) > 1 and path.is_dir() else ""
        parts.append(head + "".join(f"{n}\n" for n in names))
    return "\n".join(parts)


def run_block(block: Block, folder: Path, address: str | None = None) -> None:
    """Run one block in ``folder`` (the current folder) and check the output it shows; a
    block for a Triton server at localhost:8000 is pointed at ``address`` instead."""
    code = block.code.replace("localhost:8000", address) if address else block.code
    output = ""
    if block.needs == "network":
        output = run_in_a_clone(code, folder)
    elif block.lang == "python":
        done = subprocess.run([sys.executable, "-c", code], check=False, cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, (block.id, done.stderr[-3000:])
        output = done.stdout
    else:
        for line in commands(code):
            command, exit_code = parse(line)
            if command:
                output = run(command, exit_code)
    missing = shows(output, block.expected, block.figures)
    assert not missing, (block.id, missing, output[-3000:])


def run_in_a_clone(code: str, folder: Path) -> str:
    """A set-up block as a user runs it: bash, in a fresh clone of the repository."""
    clone = folder / "attn-deploy"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], check=False, cwd=clone, capture_output=True,
                          text=True)
    assert done.returncode == 0, (code, done.stderr[-3000:])
    return done.stdout + done.stderr


@pytest.fixture
def page_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder with the repository's demo models, example block files and test helpers."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # tables as wide as their cells: no wrap that moves with a figure
    for name in ("demo", "examples", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


# ---- what a block needs -------------------------------------------------------------------

TRT_INSTALL = ("pip install tensorrt --extra-index-url https://pypi.nvidia.com on a machine with an NVIDIA GPU "
               "(JetPack's on a Jetson)")


def need_reason(need: str) -> str | None:
    """Why a block marked ``<!-- needs: NEED -->`` cannot run here, or None when it can."""
    if need == "network":
        return None if os.environ.get("ATTN_DEPLOY_DOCS_NETWORK") == "1" else (
            "installs torch and attn-deploy from PyPI into a new venv: needs a network, and "
            "ATTN_DEPLOY_DOCS_NETWORK=1 to say the download (about 1 GB) is wanted")
    if need == "tritonserver":
        return triton_reason()
    if need == "ultralytics":
        return None if importlib.util.find_spec("ultralytics") else (
            "needs ultralytics, the test-only reference: pip install --no-deps ultralytics==8.4.190, as tests/run.sh does")
    if importlib.util.find_spec("tensorrt") is None:
        return f"needs TensorRT: {TRT_INSTALL}"
    if need == "tensorrt":
        return None
    return box_reason(need)


def box_reason(need: str) -> str | None:
    """``dla``: a DLA core on this machine; a target's name: this machine is that box."""
    import tensorrt as trt

    cores = trt.Builder(trt.Logger()).num_DLA_cores
    if need == "dla":
        return None if cores else "needs a DLA (a Jetson AGX or NX with TensorRT)"
    from attn_deploy.targets import get_target, version_tuple

    box = get_target(need)
    if version_tuple(trt.__version__)[:2] != box.version[:2] or (box.dla_cores and not cores):
        return (f"needs the box {need} itself (TensorRT {box.tensorrt}{', a DLA' if box.dla else ''}): "
                "engines are built on the box they run on")
    return None


def known_need(need: str) -> bool:
    from attn_deploy.targets import targets

    return need in ("network", "tritonserver", "ultralytics", "tensorrt", "dla") or need in {t.name for t in targets()}


def triton_reason() -> str | None:
    from attn_deploy.serve.local import pytriton_root

    if pytriton_root() is None:
        return ("needs a tritonserver: NVIDIA's nvidia-pytriton wheel carries one (pip install --no-deps "
                "nvidia-pytriton==0.7.0, as tests/run.sh does)")
    if not (triton_env() / "bin" / "python").is_file():
        return f"needs the python backend's environment at {triton_env()} (tests/run.sh makes it)"
    return None


def triton_env() -> Path:
    return Path(os.environ.get("ATTN_DEPLOY_TRITON_ENV", ROOT / ".venv-triton"))


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """A local tritonserver (the pytriton wheel's, which has the python backend only) serving
    each ONNX file of the page, with its sidecar, as ``serve --ensemble --backend python``
    writes it: the model names the page's own repository has. Its HTTP address, once ready."""
    from attn_deploy.serve.local import LocalTriton

    repo = folder / "served-here"
    for onnx in sorted(folder.glob("*.onnx")):
        if onnx.with_suffix(".json").is_file():
            run(f"attn-deploy serve {onnx.name} --repository {repo} --ensemble --backend python "
                f"--python-env {triton_env()}")
    with LocalTriton(repo) as server:
        yield server.http


# ---- the tests ----------------------------------------------------------------------------


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert all(f"attn-deploy {verb}" in cli for verb in ("export", "lint", "calib", "qat", "build", "serve", "ship", "targets"))
    assert "--min-int8" in cli and "--target" in cli  # every option, from click itself
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "export_model" in api and "write the ONNX file and its sidecar" in api  # from the docstring
    matrix = (tmp_path / "site" / "results" / "targets" / "index.html").read_text()
    assert "yolo26n:end2end" in matrix  # the generated table, included
    engines = (tmp_path / "site" / "howto" / "engines" / "index.html").read_text()
    marker = engines.index("<!-- needs: tensorrt -->")  # a comment: not shown, ...
    assert "&lt;!-- needs" not in engines and "--timing-cache" in engines[marker:]  # ... above the block, which is


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    pages = nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk
    assert len(pages) >= 25 and pages[1:6] == [f"start/{p}.md" for p in
                                               ("yolov5-fork", "ultralytics", "own-blocks", "jetson-int8", "triton")]


def fence_problems(page: str, text: str) -> list[str]:
    """What breaks the convention on a page: a block nobody runs, an output block after no
    command, a need the test cannot tell, a needs: comment that marks no block."""
    wrong, previous = [], ("", -1)
    for line, m in fences(text):
        lang, needs = m.group("lang"), m.group("needs")
        if lang not in (*RUNNABLE, "text"):
            wrong.append(f"{page}:{line}: a ```{lang} block (bash, python, or text after one of them)")
        if lang == "bash" and not any(parse(x)[0] for x in commands(m.group("body"))):
            wrong.append(f"{page}:{line}: a ```bash block that runs nothing")
        if lang == "text" and (previous[0] not in RUNNABLE or text[previous[1]:m.start()].strip()):
            wrong.append(f"{page}:{line}: a ```text block that does not follow a bash or python block")
        if needs and not known_need(needs):
            wrong.append(f"{page}:{line}: needs {needs!r}, which the test cannot tell")
        previous = (lang, m.end())
    if len(re.findall("^<!-- needs:", text, re.MULTILINE)) != sum(1 for _, m in fences(text) if m.group("needs")):
        wrong.append(f"{page}: a needs: comment that is not right above a block")
    return wrong


def test_every_block_of_the_docs_is_run_or_checked() -> None:
    """No plain ``` fence: an illustration nobody runs drifts from the code. (The results pages
    include generated tables, and are held to that by the test below.)"""
    pages = [p for p in nav_pages() if not p.startswith("results/")]
    wrong = [problem for page in pages for problem in fence_problems(page, (DOCS / page).read_text())]
    assert not wrong, "\n".join(wrong)
    bad = "```\nattn-deploy x\n```\n\n```text\nout\n```\n\n<!-- needs: gpu -->\n\n```bash\n# only\n```\n<!-- needs: tensorrt -->\n"
    assert [p.split(": ", 1)[1] for p in fence_problems("p", bad)] == [
        "a ``` block (bash, python, or text after one of them)", "a ```text block that does not follow a bash or python block",
        "a ```bash block that runs nothing", "needs 'gpu', which the test cannot tell",
        "a needs: comment that is not right above a block"]


def test_every_start_page_has_runnable_examples() -> None:
    for page in nav_pages():
        if page.startswith("start/"):
            found = examples(page)
            assert found and all(cmds for cmds, _ in found), page
            assert any(expected for _, expected in found), f"{page} shows no output to check"


def test_the_output_check_masks_figures_only() -> None:
    shown = ["│ size │ 29.11 MB, 254 nodes, sha256 a97e9df689d1 │", "max abs 6.10e-05 (tol 0.001 + 1e-05|ref|)"]
    printed = "┃ size ┃   3.2 MB, 31 nodes, sha256 03fbe2a1c9d7 ┃\nmax abs −1.2e+03 (tol 0.001 + 1e-05|ref|)\n"
    assert shows(printed, shown, figures=True) == []
    assert shows(printed, shown, figures=False) == shown
    assert shows(printed.replace("nodes", "edges"), shown, figures=True) == shown[:1]  # words still count
    assert parse("attn-deploy lint x.onnx --target nano-jp4.6   # Mod: exit 1") == ("attn-deploy lint x.onnx --target nano-jp4.6", 1)
    assert parse("# attn-deploy ship --weights best.pt") == ("", 0)


def runnable_pages() -> list[str]:
    """Every page with a block to run, but the results pages: theirs rerun a benchmark (minutes to
    hours) to make the tables they include, which a test of their own holds to stamps."""
    return [p for p in nav_pages() if not p.startswith("results/") and blocks(p)]


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages())
def test_page_examples_run_as_written(page: str, page_folder: Path) -> None:
    """The page's blocks in order; one that needs what is not here is left out, and said."""
    left_out = []
    for block in blocks(page):
        if block.needs and (reason := need_reason(block.needs)):
            left_out.append(f"{block.id}: {reason}")
            continue
        with served(page_folder) if block.needs == "tritonserver" else contextlib.nullcontext() as address:
            run_block(block, page_folder, address)
    if left_out:
        pytest.skip(f"every other block ran and passed; not run here: {'; '.join(left_out)}")


def all_commands() -> list[tuple[str, str]]:
    """(page, command) for every attn-deploy command in any code block of the docs and the README,
    run or not: commented-out ones too (a user's own best.pt, data.yaml)."""
    out = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"```[^\n]*\n(.*?)```", path.read_text(), re.DOTALL):
            for line in block.splitlines():
                if line.lstrip().startswith("#"):  # '# your best.pt: attn-deploy ...'
                    line = line[line.find("attn-deploy "):] if "attn-deploy " in line else ""
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
    """Commands shown, run or not (commented out: they name the user's files), name real verbs,
    options and choices: the docs cannot drift from the command line."""
    commands = all_commands()
    assert len(commands) > 60
    wrong = [f"{page}: {command} ({why})" for page, command in commands if (why := cli_problem(command))]
    assert not wrong, "\n".join(wrong)


def test_results_pages_show_only_generated_tables() -> None:
    """A results page types no table: it includes what a benchmark script wrote, stamped with
    the script, the date and the versions."""
    for page in ("results/precision.md", "results/targets.md", "results/exporters.md", "results/parity-noise.md",
                 "results/serving.md", "results/per-block.md"):
        text = (DOCS / page).read_text()
        assert not [line for line in text.splitlines() if line.startswith("|")], page
        included = re.findall(r'^--8<-- "(.+)"$', text, re.MULTILINE)
        assert included, page
        for path in included:
            generated = (ROOT / path).read_text()
            assert "Measured by `benchmarks/" in generated and re.search(r"\d{4}-\d\d-\d\d", generated), path
