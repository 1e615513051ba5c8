"""Training checkpoints in the ultralytics format: rebuilt faithfully, and never executed."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

import yolov5_standin as y5
from attn_deploy.errors import UserError
from attn_deploy.models import load_model
from attn_deploy.models.zoo import SCALES, YOLOV5, insert_row

# the class names and yaml arguments each fork writes for its attention row; where two forks
# write one name, "name/fork" picks the stand-in's (its yaml's 'fork' key)
FORK_ROWS = {
    "SE": [1024], "SEAttention": [1024], "SELayer": [1024, 4], "ECA": [1024], "CA": [1024], "CoordAtt": [1024],
    "CBAM": [1024], "CBAM/yolov5": [1024], "CBAM/official": [1024, 16], "CBAMBlock": [1024, 16, 7],
    "ShuffleAttention": [1024], "CrissCrossAttention": [1024], "S2Attention": [1024],
    "SimAM": [1024], "SKAttention": [1024], "NAMAttention": [1024], "SOCA": [1024],
    "GAMAttention": [1024, 1024],
}


@pytest.fixture(scope="module", autouse=True)
def standin() -> Iterator[None]:
    y5.install()
    yield
    y5.uninstall()


def fork_cfg(attention: str | None, nc: int = 4) -> dict[str, Any]:
    gd, gw = SCALES["n"]
    cfg = {"nc": nc, "depth_multiple": gd, "width_multiple": gw, **copy.deepcopy({k: v for k, v in YOLOV5.items() if k != "nc"})}
    if not attention:
        return cfg
    name, _, fork = attention.partition("/")
    if fork:
        cfg["fork"] = fork
    return insert_row(cfg, 9, [-1, 1, name, FORK_ROWS[attention]])


def saved(tmp_path: Path, model: torch.nn.Module, name: str = "best", **kw: Any) -> Path:
    path = tmp_path / f"{name}.pt"
    torch.save(y5.training_checkpoint(model, **kw), path)
    return path


def reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stand-in's own output with the weights as saved (rounded to half)."""
    with torch.no_grad():
        return copy.deepcopy(model).half().float().eval()(x)[0]


def layer_output(model: torch.nn.Module, x: torch.Tensor, i: int, as_saved: bool = False) -> torch.Tensor:
    """The output of yaml layer i: the attention block itself, before later layers dampen it."""
    model = copy.deepcopy(model).half().float().eval() if as_saved else model
    seen: list[torch.Tensor] = []
    hook = model.model[i].register_forward_hook(lambda m, inp, out: seen.append(out))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen[0]


def assert_same_detections(ours: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(ours[..., :4], ref[..., :4], rtol=0, atol=2e-3)  # pixels
    torch.testing.assert_close(ours[..., 4:], ref[..., 4:], rtol=0, atol=2e-5)  # probabilities


@pytest.mark.parametrize("fork", [None, *FORK_ROWS])
def test_training_checkpoint_round_trips(tmp_path: Path, fork: str | None) -> None:
    standin = y5.randomize(y5.DetectionModel(fork_cfg(fork)))
    standin.names = {0: "car", 1: "person", 2: "bike", 3: "sign"}  # v7.0 saves a dict
    path = saved(tmp_path, standin)
    ours = load_model(weights=path)
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        out = ours(x)
    assert_same_detections(out, reference(standin, x))
    if fork:
        torch.testing.assert_close(layer_output(ours, x, 9), layer_output(standin, x, 9, as_saved=True), rtol=1e-4, atol=1e-5)
    assert ours.names == ["car", "person", "bike", "sign"] and ours.name == "best"


def test_fork_variants_are_read_from_the_records(tmp_path: Path) -> None:
    """What no tensor shows: SimAM's lambda (YOLOAir passes c2 = 256), CBAM's slope and plane order."""
    ours = load_model(weights=saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg("SimAM")))))
    assert ours.model[9].e_lambda == 256.0
    cbam = load_model(weights=saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg("CBAM"))))).model[9]
    assert cbam.channel.act.negative_slope == 0.1 and not cbam.spatial.max_first
    gam = load_model(weights=saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg("GAMAttention"))))).model[9]
    assert not gam.channel_sigmoid and gam.spatial_attention[0].groups == 4


CBAM_ORDERS = {"CBAM": (False, "shared_MLP"), "CBAM/yolov5": (False, "ca.f1"), "CBAM/official": (True, "mlp"),
               "CBAMBlock": (True, "ca.se")}


@pytest.mark.parametrize("fork", sorted(CBAM_ORDERS))
def test_cbam_plane_order_follows_its_source(tmp_path: Path, fork: str) -> None:
    """Each source's spatial gate stacks its planes in its own order; a trained 7x7 conv weighs
    the two planes differently, so the wrong order moves boxes by pixels (1089 px on a real fork)."""
    standin = y5.randomize(y5.DetectionModel(fork_cfg(fork)))
    conv = next(m for m in standin.model[9].modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 2)
    with torch.no_grad():  # a trained-looking gate: the planes weighed apart
        conv.weight[:, 0] = conv.weight[:, 0].abs() * 20
        conv.weight[:, 1] = -conv.weight[:, 1].abs() * 20
    path = saved(tmp_path, standin)
    ours = load_model(weights=path)
    max_first, evidence = CBAM_ORDERS[fork]
    assert ours.model[9].spatial.max_first is max_first
    (reading,) = [r for r in ours.readings if r["what"] == "spatial gate planes"]
    assert reading["certain"] and evidence in reading["evidence"], reading
    x = torch.rand(1, 3, 128, 160)
    want = layer_output(standin, x, 9, as_saved=True)
    torch.testing.assert_close(layer_output(ours, x, 9), want, rtol=1e-4, atol=1e-5)
    ours.model[9].spatial.max_first = not max_first  # the other reading is far off: the test can tell
    assert (layer_output(ours, x, 9) - want).abs().max() > 1e-2


def test_an_open_choice_is_a_stated_guess(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    """A plain state dict with names no source uses: CBAM's plane order is guessed, said in the
    warning and kept in the sidecar's readings."""
    from click.testing import CliRunner

    from attn_deploy.cli import main

    standin = y5.randomize(y5.DetectionModel(fork_cfg("CBAM/yolov5")))
    state = {k.replace(".ca.f", ".ca.lin"): v.half() for k, v in standin.state_dict().items()}
    torch.save(state, tmp_path / "sd.pt")
    r = CliRunner().invoke(main, ["export", "--model", "yolov5n-cbam", "--weights", str(tmp_path / "sd.pt"),
                                  "--imgsz", "64", "--no-check", "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.stderr
    assert "were guessed: " in r.stderr and "layer 9 cbam spatial gate planes as [max; mean]" in r.stderr, r.stderr
    assert "verify --weights sd.pt --fork DIR" in r.stderr
    import json

    readings = json.loads((tmp_path / "m.json").read_text())["readings"]
    assert {"layer": 9, "what": "spatial gate planes", "taken": "[max; mean]", "certain": False}.items() <= \
        next(r for r in readings if r["what"] == "spatial gate planes").items()


def test_v6_model_class_and_model_key_without_ema(tmp_path: Path) -> None:
    standin = y5.randomize(y5.Model(fork_cfg("CA")))
    path = saved(tmp_path, standin, ema=False)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert_same_detections(load_model(weights=path)(x), reference(standin, x))


def test_ema_is_preferred_over_model(tmp_path: Path) -> None:
    ema, raw = (y5.randomize(y5.DetectionModel(fork_cfg(None)), seed=s) for s in (1, 2))
    ckpt = y5.training_checkpoint(ema)
    ckpt["model"] = copy.deepcopy(raw).half()
    torch.save(ckpt, tmp_path / "both.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert_same_detections(load_model(weights=tmp_path / "both.pt")(x), reference(ema, x))


def test_plain_state_dict_needs_and_uses_a_named_architecture(tmp_path: Path) -> None:
    standin = y5.randomize(y5.DetectionModel(fork_cfg("SEAttention", nc=2)))
    path = tmp_path / "sd.pt"
    torch.save({k: v.half() for k, v in standin.state_dict().items()}, path)
    with pytest.raises(UserError, match="plain state dict: name its architecture"):
        load_model(weights=path)
    from attn_deploy.errors import AttnDeployWarning

    with pytest.warns(AttnDeployWarning, match="layer 9 se gate as sigmoid"):  # a state dict shows no gate module
        ours = load_model(model="yolov5n-se", weights=path)  # fc.0/fc.2 Linear -> our 1x1 convs, by order
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert_same_detections(ours(x), reference(standin, x))
    assert ours.detect.nc == 2


def test_architecture_mismatch_names_the_layer(tmp_path: Path) -> None:
    path = saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg("CA"))))
    with pytest.raises(UserError, match=r"layer 9 \(se\)"):
        load_model(model="yolov5n-se", weights=path)
    with pytest.raises(UserError, match="layers \\[25\\]"):
        load_model(model="yolov5n", weights=path)


# ---- refusing code -------------------------------------------------------------------------


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@y5._place("models.common.write_marker")
def write_marker(path: str) -> None:
    Path(path).touch()


class _ModelNamespaceCall:
    """A global from the model namespace (which becomes a record), then a call of it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (write_marker, (str(self.marker),))


@pytest.mark.parametrize(
    "payload,name",
    [(_SystemCall, "posix.system" if os.name == "posix" else "nt.system"), (_Exec, "builtins.exec"),
     (_ModelNamespaceCall, "models.common.write_marker")],
)
def test_pickles_that_run_code_are_refused_and_run_nothing(tmp_path: Path, payload: type, name: str) -> None:
    marker = tmp_path / "pwned"
    standin = y5.randomize(y5.DetectionModel(fork_cfg(None)))
    ckpt = y5.training_checkpoint(standin)
    ckpt["opt"] = payload(marker)  # hidden in the metadata, not the model
    torch.save(ckpt, tmp_path / "evil.pt")
    with pytest.raises(UserError) as e:
        load_model(weights=tmp_path / "evil.pt")
    assert name in str(e.value) and "refused" in str(e.value)
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="weights file not found"):
        load_model(weights=tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        load_model(weights=junk)
    good = saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg(None))))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="cut.pt"):
        load_model(weights=cut)


# ---- ultralytics' metadata (the models themselves: test_ultralytics_checkpoints.py) ----------


def test_class_names_as_a_dict_are_read_in_index_order(tmp_path: Path) -> None:
    standin = y5.randomize(y5.DetectionModel(fork_cfg(None, nc=12)))
    standin.names = {i: f"class{i}" for i in range(12)}  # as a string, 10 sorts before 2
    assert load_model(weights=saved(tmp_path, standin)).names == [f"class{i}" for i in range(12)]


def test_ultralytics_args_namespace_is_an_inert_record(tmp_path: Path) -> None:
    """The trainer's arguments pickle as ``IterableSimpleNamespace()`` then its state: read as an
    empty record filled with plain data (ultralytics need not be installed)."""
    from hostile import archive_with_pickle, pickle_text

    from attn_deploy.models.checkpoint import Record, safe_load

    ns = b"cultralytics.utils\nIterableSimpleNamespace\n)R}" + pickle_text("imgsz") + b"M\x80\x02sb"
    path = archive_with_pickle(tmp_path, "args.pt", b"\x80\x02}" + pickle_text("args") + ns + b"s.")
    args = safe_load(path)["args"]
    assert isinstance(args, Record) and args.get("imgsz") == 640 and args.class_name == "IterableSimpleNamespace"


def test_our_checkpoint_keeps_the_variant_that_was_read(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    """A fork's CBAM written as our checkpoint (calib, QAT and training write ours): reloaded in the
    variant read from the fork, not in our defaults, with nothing left to guess."""
    from attn_deploy.models.checkpoint import write_checkpoint

    fork = load_model(weights=saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg("CBAM")))))
    again = load_model(weights=write_checkpoint(tmp_path / "ours.pt", fork, half=False))
    cbam = again.model[9]
    assert not cbam.spatial.max_first and cbam.channel.act.negative_slope == 0.1 and cbam.variant == fork.model[9].variant
    assert again.readings == [] and not [w for w in recwarn if "guessed" in str(w.message)]
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(again(x), fork(x))


@pytest.mark.parametrize("fork", [None, "CoordAtt"])
def test_attention_batchnorm_keeps_the_family_eps(tmp_path: Path, fork: str | None) -> None:
    """Bug found: an attention layer rebuilt in its variant got torch's BatchNorm eps (1e-5), not
    the 1e-3 every BatchNorm of the model is built with (yolov5's initialize_weights), so our own
    checkpoints and plain state dicts of CA models ran 0.06 px away from the model as trained (the
    fork's pickled record, when there is one, still gives its own eps)."""
    import torch.nn as nn

    from attn_deploy.models.checkpoint import write_checkpoint
    from attn_deploy.models.zoo import create_model

    if fork:  # a fork checkpoint: eps comes from its record
        net = load_model(weights=saved(tmp_path, y5.randomize(y5.DetectionModel(fork_cfg(fork)))))
    else:
        net = create_model("yolov5n-ca", nc=3)
        y5.randomize(net)
    again = load_model(weights=write_checkpoint(tmp_path / "ours.pt", net, half=False))
    assert {m.eps for m in again.modules() if type(m) is nn.BatchNorm2d} == {1e-3}
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), net.eval()(x))
