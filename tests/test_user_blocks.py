"""Users' own blocks (``--blocks FILE.py``, ``attn_deploy.blocks`` entry points): a fork's
checkpoint whose classes we have never seen, rebuilt with the user's code, exported and
checked, and nothing from its pickle ever run."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import fork_mobilenet as fork
from attn_deploy import blocks
from attn_deploy.cli import main
from attn_deploy.errors import AttnDeployWarning, UserError
from attn_deploy.exporter.blockcheck import export_failure
from attn_deploy.models import load_model

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "blocks" / "mobilenetv3_ghost.py"


@pytest.fixture(scope="module")
def fork_model() -> torch.nn.Module:
    net = fork.model()
    yield net
    fork.y5.uninstall()


@pytest.fixture()
def fork_ckpt(tmp_path: Path, fork_model: torch.nn.Module) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    return fork.save(tmp_path / "best.pt", fork_model, marker), marker


def _reference(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(net).half().float().eval()(x)[0]


def test_fork_checkpoint_is_rebuilt_with_the_users_blocks(fork_ckpt: tuple[Path, Path], fork_model: torch.nn.Module,
                                                         recwarn: pytest.WarningsRecorder) -> None:
    path, marker = fork_ckpt
    net = load_model(weights=path, blocks=[EXAMPLE])
    x = torch.rand(2, 3, 320, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = net(x)
    ref = _reference(fork_model, x)
    torch.testing.assert_close(ours[..., :4], ref[..., :4], rtol=0, atol=1e-3)  # pixels
    torch.testing.assert_close(ours[..., 4:], ref[..., 4:], rtol=0, atol=1e-5)  # probabilities
    assert [m.type for m in net.model][:3] == ["conv_bn_hswish", "MobileNet_Block", "MobileNet_Block"]
    assert not marker.exists()  # the pickled bound method and lambda never ran
    ours_warnings = [str(w.message) for w in recwarn if issubclass(w.category, AttnDeployWarning)]
    assert len(ours_warnings) == 1
    assert "model.1.forward (bound method (lambda))" in ours_warnings[0]
    assert "model.9.act_fn (lambda)" in ours_warnings[0]
    assert not hasattr(net.model[9], "act_fn") and "forward" not in vars(net.model[1])


def test_export_of_the_fork_passes_lint_and_parity_and_names_the_blocks(tmp_path: Path, fork_ckpt: tuple[Path, Path]) -> None:
    path, marker = fork_ckpt
    out = tmp_path / "fork.onnx"
    result = CliRunner().invoke(main, ["export", "--weights", str(path), "--blocks", str(EXAMPLE), "--imgsz", "256",
                                       "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["passed"] and doc["lint"]["passed"] and doc["parity"]["passed"]
    assert "warning: best.pt: 2 pickled function(s) ignored" in result.stderr
    layers = json.loads(out.with_suffix(".json").read_text())["layers"]
    assert len(layers) == 24 and all(b["output"] for b in layers)  # one tensor per layer, Ghost rows too
    assert not marker.exists()
    # bug found: the sidecar's source named the weights and not the block files, so calib --qat on
    # this ONNX failed with "unknown module"; it names them now, and calib asks for them by name
    # (a block file is code: it runs when the user names it, never from a sidecar)
    assert json.loads(out.with_suffix(".json").read_text())["source"] == {"weights": str(path), "blocks": [str(EXAMPLE)]}
    blocks.clear()
    r = CliRunner().invoke(main, ["calib", str(out), "--precision", "int8", "--data", str(tmp_path / "data.yaml"),
                                  "--qat", "1"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"fork.onnx was exported with --blocks {EXAMPLE}: name the same block files" in r.stderr
    assert not (tmp_path / "fork.qat.int8.onnx").exists() and not marker.exists()


@pytest.mark.slow
def test_parity_per_block_names_the_users_blocks(tmp_path: Path, fork_ckpt: tuple[Path, Path]) -> None:
    from attn_deploy.train.shapes import write_dataset

    path, marker = fork_ckpt
    data = write_dataset(tmp_path / "shapes", train=1, val=3)
    onnx_path = tmp_path / "fork.onnx"
    common = ["--weights", str(path), "--blocks", str(EXAMPLE)]
    assert CliRunner().invoke(main, ["export", *common, "--imgsz", "128", "-o", str(onnx_path)]).exit_code == 0
    r = CliRunner().invoke(main, ["parity", *common, "--against", str(onnx_path), "--data", str(data),
                                  "--imgsz", "128", "--per-block", "--block-images", "2", "--json"])
    assert r.exit_code in (0, 1), r.stderr
    blocks = {b["layer"]: b for b in json.loads(r.stdout)["blocks"]}
    assert [blocks[i]["module"] for i in (0, 1, 9, 17)] == ["StemConv", "Bneck", "Ghost", "Ghost"]
    assert max(b["local"]["rel"] for b in blocks.values()) < 1e-4  # float32 ONNX: every layer at float noise
    assert not marker.exists()


def test_a_plainly_pickled_bound_method_is_named_not_bound(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    """Without dill, pickle stores a bound method as getattr(obj, name): a marker all the same."""
    import yolov5_standin as y5
    from test_checkpoint import fork_cfg

    y5.install()
    try:
        standin = y5.randomize(y5.DetectionModel(fork_cfg("SE")))
        ckpt = y5.training_checkpoint(standin)
        ckpt["ema"].model[3].fused_forward = ckpt["ema"].model[3].forward
        torch.save(ckpt, tmp_path / "best.pt")
    finally:
        y5.uninstall()
    net = load_model(weights=tmp_path / "best.pt")
    assert "fused_forward" not in vars(net.model[3])
    [w] = [str(w.message) for w in recwarn if issubclass(w.category, AttnDeployWarning)]
    assert "ema.model.3.fused_forward (bound method forward)" in w


def test_a_yaml_with_the_users_block_and_a_custom_rule(tmp_path: Path) -> None:
    """A function rule (channels, args, width) and the 'keep' rule, in a yaml of our own."""
    f = tmp_path / "mine.py"
    f.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from attn_deploy.blocks import block

        def doubled(channels, args, width):
            return [channels[0], 2 * channels[0]], 2 * channels[0]

        @block("Doubler", rule=doubled)
        class Doubler(nn.Module):
            def __init__(self, c1, c2):
                super().__init__()
                self.conv = nn.Conv2d(c1, c2, 1)
            def forward(self, x):
                return self.conv(x)

        @block("Gate", rule="keep", example=[0.5])
        class Gate(nn.Module):
            def __init__(self, c1, alpha=1.0):
                super().__init__()
                self.alpha = alpha
                self.w = nn.Parameter(torch.ones(1, c1, 1, 1))
            def forward(self, x):
                return x * torch.sigmoid(self.alpha * self.w)
    """))
    from attn_deploy.models.zoo import SCALES, YOLOV5, insert_row

    gd, gw = SCALES["n"]
    cfg = {"nc": 3, "depth_multiple": gd, "width_multiple": gw, **copy.deepcopy({k: v for k, v in YOLOV5.items() if k != "nc"})}
    cfg = insert_row(insert_row(cfg, 9, [-1, 1, "Gate", [0.5]]), 9, [-1, 1, "Doubler", []])
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    net = load_model(cfg=tmp_path / "m.yaml", blocks=[f])
    assert net.out_channels[9] == 2 * net.out_channels[8] and net.out_channels[10] == net.out_channels[9]
    assert net.model[10].alpha == 0.5
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 128, 128)).shape == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4), 8)


# ---- attn-deploy blocks ------------------------------------------------------------------


def test_blocks_verb_lists_and_checks_the_example_file() -> None:
    result = CliRunner().invoke(main, ["blocks", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = {d["block"]: d for d in json.loads(result.stdout)}
    assert set(doc) == {"conv_bn_hswish", "MobileNet_Block", "GhostConv"}
    assert doc["MobileNet_Block"]["names"] == ["MobileNet_Block", "models.common.MobileNet_Block"]
    assert doc["MobileNet_Block"]["shapes"] == ["16x32x48 -> 24x16x24", "16x48x32 -> 24x24x16"]
    assert all(d["passed"] and d["max_error"] < 1e-5 and not d["lint"] for d in doc.values())


def keep_block(name: str, body: str) -> str:
    """A block file with one channel-keeping block whose forward returns ``body`` (of x)."""
    return ("import torch\nfrom torch import nn\nfrom attn_deploy.blocks import block\n"
            f"@block({name!r}, rule='keep')\nclass B(nn.Module):\n    def __init__(self, c1):\n"
            f"        super().__init__()\n    def forward(self, x):\n        return {body}\n")


BAD_BLOCKS = {  # the block's forward, and what the check says
    "a fixed size": ("nn.functional.adaptive_avg_pool2d(x, (4, 4))", "does not follow its input's"),
    "an upsampling adaptive pool": ("nn.functional.adaptive_avg_pool2d(x, (x.shape[2] * 2, x.shape[3] * 2))",
                                    "cannot export adaptive pooling (since output_size is not constant); "
                                    "the usual rewrite: attn_deploy.ops.adaptive_avg_pool2d(x, size)"),
    "wrong declared channels": ("x[:, : x.shape[1] // 2]", "declared 32 channels"),
    "an op TensorRT cannot parse": ("x * torch.det(x[:, :1, :2, :2]).reshape(-1, 1, 1, 1)", "(Det): not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_BLOCKS))
def test_blocks_verb_finds_what_would_export_wrong(tmp_path: Path, case: str) -> None:
    body, needle = BAD_BLOCKS[case]
    f = tmp_path / "bad.py"
    f.write_text(keep_block("Bad", body))
    result = CliRunner().invoke(main, ["blocks", str(f)])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_names_the_user_block_in_lint_findings_and_exporter_failures(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """In a model: a lint finding inside a user block names it; an op the exporter cannot
    export at all is one line naming the block, the op and the rewrite (exit 2)."""
    import yaml

    from attn_deploy.models.zoo import YOLOV5, insert_row

    monkeypatch.chdir(tmp_path)  # short names in the one line, wherever the temporary folder is
    for name, body, code, needle in (
        ("Dets", "x * torch.det(x[:, :1, :2, :2]).reshape(-1, 1, 1, 1)", 1, "(Det): layer 10 (Dets, from"),
        ("Up", "nn.functional.adaptive_avg_pool2d(x, (x.shape[2] * 2, x.shape[3] * 2))[:, :, ::2, ::2]", 2,
         "layer 10 (Up, from"),
        ("Shrink", "nn.functional.adaptive_avg_pool2d(x, (2, 2))", 2, "then layer 13 (Concat) failed"),
    ):
        f = tmp_path / f"{name}.py"
        f.write_text(keep_block(name, body))
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(insert_row(copy.deepcopy(YOLOV5), 10, [-1, 1, name, []])))
        r = CliRunner().invoke(main, ["export", "--cfg", cfg.name, "--blocks", f.name, "--imgsz", "64",
                                      "-o", f"{name}.onnx"])
        assert r.exit_code == code and needle in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_exporter_failure_prints_nothing_but_the_line(tmp_path: Path) -> None:
    """The installed command in a real process: the exporter's C++ side prints the whole
    TorchScript graph to the process's stdout on a failure; none of it reaches the terminal,
    and --verbose shows it on stderr, above the line."""
    import subprocess
    import sys

    import yaml

    from attn_deploy.models.zoo import YOLOV5, insert_row

    f = tmp_path / "Up.py"
    f.write_text(keep_block("Up", "nn.functional.adaptive_avg_pool2d(nn.functional.adaptive_avg_pool2d(x, (5, 5)), "
                                  "(x.shape[2], x.shape[3]))"))
    cfg = tmp_path / "up.yaml"
    cfg.write_text(yaml.safe_dump(insert_row(copy.deepcopy(YOLOV5), 10, [-1, 1, "Up", []])))
    command = [sys.executable, "-c", "from attn_deploy.cli import run; run()"]
    args = ["export", "--cfg", cfg.name, "--blocks", f.name, "--imgsz", "224", "-o", "up.onnx"]
    r = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stdout[:300]
    assert r.stderr.count("\n") == 1 and "layer 10 (Up, from Up.py)" in r.stderr
    assert "attn_deploy.ops.adaptive_avg_pool2d" in r.stderr
    r = subprocess.run([*command, "--verbose", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Torch IR graph at exception" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("attn-deploy: error: layer 10 (Up")


def test_export_failure_names_op_and_rewrite() -> None:
    e = RuntimeError("Unsupported: ONNX export of operator adaptive_avg_pool2d, output size that are not factor "
                     "of input size. Please feel free to request support")
    text = export_failure("layer 5 (Up, from x.py)", e)
    assert text.startswith("layer 5 (Up, from x.py): the ONNX exporter cannot export adaptive_avg_pool2d")
    assert "attn_deploy.ops.adaptive_avg_pool2d(x, size): exact at any size" in text and "Please" not in text


# ---- bad block files: one line naming the file and the block ------------------------------

BAD_FILES = {
    "syntax error": ("def broken(:\n", "line 1: syntax error"),
    "not a module": ("from attn_deploy.blocks import block\n@block('Thing')\nclass Thing:\n    pass\n",
                     "block Thing: @block decorates torch.nn.Module classes"),
    "a function": ("from attn_deploy.blocks import block\n@block('f')\ndef f(x):\n    return x\n",
                   "block f: @block decorates torch.nn.Module classes"),
    "duplicate name": ("from torch import nn\nfrom attn_deploy.blocks import block\n"
                       "@block('Same')\nclass A(nn.Module):\n    pass\n@block('Same')\nclass B(nn.Module):\n    pass\n",
                       "block B: the name 'Same' is already registered by A"),
    "built-in name": ("from torch import nn\nfrom attn_deploy.blocks import block\n@block('C3')\nclass C3(nn.Module):\n    pass\n",
                      "'C3' is a built-in block's name"),
    "unknown rule": ("from torch import nn\nfrom attn_deploy.blocks import block\n@block('X', rule='convv')\n"
                     "class X(nn.Module):\n    pass\n", "block X: unknown channel rule 'convv'"),
    "rule of the wrong shape": ("from torch import nn\nfrom attn_deploy.blocks import block\n"
                                "@block('X', rule=lambda c: c)\nclass X(nn.Module):\n    pass\n",
                                "block X: a channel rule function takes (channels, args, width)"),
    "raises on import": ("import math\nx = 1\nraise ValueError('no GPU here')\n", "line 3: importing it failed: ValueError"),
    "registers nothing": ("x = 1\n", "registers no blocks"),
    "not a .py file": (None, "is not a Python file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_block_files_end_in_one_line(tmp_path: Path, case: str) -> None:
    source, needle = BAD_FILES[case]
    f = tmp_path / ("blocks.txt" if source is None else "my_blocks.py")
    f.write_text(source or "")
    for args in (["blocks", str(f)], ["info", "--model", "yolov5n", "--blocks", str(f)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.stderr)
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and needle in line, line
        assert f.name in line, line
    assert blocks.registered() == []  # nothing half-registered is left behind


def test_a_refused_file_leaves_none_of_its_blocks(tmp_path: Path) -> None:
    from attn_deploy.models.loader import load_blocks

    f = tmp_path / "two.py"
    f.write_text("from torch import nn\nfrom attn_deploy.blocks import block\n"
                 "@block('Fine')\nclass Fine(nn.Module):\n    pass\n@block('SPPF')\nclass Mine(nn.Module):\n    pass\n")
    with pytest.raises(UserError, match="'SPPF' is a built-in block's name"):
        load_blocks([f])
    assert blocks.registered() == []
    f.write_text(f.read_text().replace("'SPPF'", "'MySPPF'"))
    assert sorted(b.name for b in load_blocks([f])) == ["Fine", "MySPPF"]


def test_a_wrong_rule_at_build_time_names_file_and_block(tmp_path: Path) -> None:
    f = tmp_path / "rules.py"
    f.write_text("from torch import nn\nfrom attn_deploy.blocks import block\n"
                 "@block('Odd', rule=lambda ch, args, width: ('not', 'a rule'))\nclass Odd(nn.Module):\n    pass\n")
    cfg = tmp_path / "m.yaml"
    from attn_deploy.models.zoo import YOLOV5, insert_row
    import yaml

    cfg.write_text(yaml.safe_dump(insert_row(copy.deepcopy(YOLOV5), 9, [-1, 1, "Odd", []])))
    with pytest.raises(UserError, match="block Odd: its channel rule returned"):
        load_model(cfg=cfg, blocks=[f])


def test_block_names_open_other_pickle_namespaces(tmp_path: Path) -> None:
    """A pickle path registered by the user makes records of that class; others stay refused."""
    from hostile import archive_with_pickle, pickle_text

    from attn_deploy.models.checkpoint import Record, safe_load

    data = b"\x80\x02}" + pickle_text("m") + b"cmyfork.nets\nMyBlock\n)\x81}b" + b"s."
    path = archive_with_pickle(tmp_path, "a.pt", data)
    with pytest.raises(UserError, match="refused: it asks to import myfork.nets.MyBlock"):
        safe_load(path)
    f = tmp_path / "b.py"
    f.write_text("from torch import nn\nfrom attn_deploy.blocks import block\n"
                 "@block('MyBlock', 'myfork.nets.MyBlock', rule='keep')\nclass MyBlock(nn.Module):\n    pass\n")
    blocks.load_files([f])
    record = safe_load(path)["m"]
    assert isinstance(record, Record) and record.full_name == "myfork.nets.MyBlock"


def test_entry_point_blocks_are_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site"
    (pkg / "acme_blocks").mkdir(parents=True)
    (pkg / "acme_blocks" / "__init__.py").write_text(
        "from torch import nn\nfrom attn_deploy.blocks import block\n"
        "@block('AcmeGate', rule='keep')\nclass AcmeGate(nn.Module):\n"
        "    def __init__(self, c1):\n        super().__init__()\n    def forward(self, x):\n        return x\n")
    info = pkg / "acme_blocks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-blocks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[attn_deploy.blocks]\nacme = acme_blocks\n")
    monkeypatch.syspath_prepend(str(pkg))
    from attn_deploy.models.loader import load_blocks

    load_blocks()
    entry = blocks.find_block("AcmeGate")
    assert entry is not None and entry.origin == "entry point acme of acme-blocks"


def test_a_dill_fork_with_its_module_globals_loads_and_matches_the_fork(
        tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    """FasterNet's forward, pickled by value with its module's spec and loader (a real fork's
    best.pt was refused for those): read without running anything, rebuilt with the block file,
    and equal to the fork's own outputs."""
    import zipfile

    import fork_fasternet as faster
    from attn_deploy.models.checkpoint import pickle_globals

    net = faster.model()
    path = faster.save(tmp_path / "best.pt", net)
    with zipfile.ZipFile(path) as z:
        names = pickle_globals(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
    assert {"_frozen_importlib.ModuleSpec", "_frozen_importlib_external.SourceFileLoader",
            "builtins.__dict__", "dill._dill._create_function"} <= set(names)
    ours = load_model(weights=path, blocks=[faster.BLOCKS])
    x = torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = ours(x)
    ref = _reference(net, x)
    torch.testing.assert_close(got[..., :4], ref[..., :4], rtol=0, atol=1e-3)  # pixels
    torch.testing.assert_close(got[..., 4:], ref[..., 4:], rtol=0, atol=4e-6)  # probabilities
    [w] = [str(w.message) for w in recwarn if issubclass(w.category, AttnDeployWarning)]
    assert ("5 pickled function(s) ignored, never run or bound: ema.model.2.m.0.spatial_mixing.forward "
            "(bound method (function forward_split_cat)) and 4 more like it; import machinery of "
            "models.extra.fasternet (ModuleSpec, SourceFileLoader)") in w, w
    out = tmp_path / "faster.onnx"
    r = CliRunner().invoke(main, ["export", "--weights", str(path), "--blocks", str(faster.BLOCKS), "--imgsz", "192",
                                  "-o", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["parity"]["passed"]
    assert "import machinery of models.extra.fasternet (ModuleSpec, SourceFileLoader)" in r.stderr  # whole, on one line


def test_mlca_ported_with_the_drop_ins_equals_the_forks_and_exports(tmp_path: Path) -> None:
    """The block-file guide's example (docs/howto/blocks.md): the forks' MLCA pools up from 5x5 to HxW, which the exporter refuses;
    the block file's port (attn_deploy.ops) equals the fork's model and exports with dynamic H, W."""
    import yolov5_standin as y5
    from attn_deploy.models.zoo import insert_row
    from test_checkpoint import fork_cfg

    mlca = Path(__file__).resolve().parent.parent / "examples" / "blocks" / "mlca.py"
    with y5.installed():
        standin = y5.randomize(y5.DetectionModel(insert_row(fork_cfg(None), 9, [-1, 1, "MLCA", [1024]])))
        torch.save(y5.training_checkpoint(standin), tmp_path / "best.pt")
    net = load_model(weights=tmp_path / "best.pt", blocks=[mlca])
    for h, w in ((160, 224), (288, 96)):  # 5x7 and 9x3 at stride 32: not multiples of 5
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            got = net(x)
        ref = _reference(standin, x)
        torch.testing.assert_close(got[..., :4], ref[..., :4], rtol=0, atol=1e-3)
        torch.testing.assert_close(got[..., 4:], ref[..., 4:], rtol=0, atol=1e-5)
    r = CliRunner().invoke(main, ["export", "--weights", str(tmp_path / "best.pt"), "--blocks", str(mlca),
                                  "--imgsz", "224", "--dynamic", "-o", str(tmp_path / "mlca.onnx"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["parity"]["passed"]
