"""Checkpoints written by ultralytics itself (YOLOv8, YOLO11, YOLO12, YOLO26, and YOLOv8 with
ultralytics' CBAM row) read through our safe loader: rebuilt as our anchor-free models, their
outputs equal ultralytics' own on the same (seed-randomised, BatchNorm statistics included)
weights. ultralytics is the test's reference only: the package never imports it.

ultralytics' predict() and NMS need torchvision's compiled ops, which do not load beside our
torch: the reference is ``model.eval()(x)`` and its first output.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-settings-"))  # not the user's home
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
pytest.importorskip("ultralytics", reason="the reference implementation: pip install --no-deps ultralytics==8.4.190 "
                    "torchvision==0.28.0 and its light dependencies, as tests/run.sh does")

from ultralytics import YOLO
from ultralytics.cfg import get_cfg
from ultralytics.nn import tasks
from ultralytics.nn.modules import conv as ultralytics_conv
from ultralytics.utils import DEFAULT_CFG

from attn_deploy.errors import UserError
from attn_deploy.models import load_model
from attn_deploy.models.anchorfree import AnchorFreeModel
from attn_deploy.models.attention.cbam import CBAM
from attn_deploy.models.zoo import insert_row

BOX_ATOL, SCORE_ATOL = 1e-2, 1e-4  # pixels at 640; probabilities
SIZES = {"640x640": (2, 640, 640), "480x640": (1, 480, 640)}  # batch 2 square, and a non-square image
MODELS = ["yolov8n", "yolo11n", "yolo12n", "yolo26n", "yolov8n-cbam"]
NAMES = {i: f"class{i}" for i in range(80)}  # a dict as ultralytics keeps it; 80 > 10 checks the order


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights, biases and BatchNorm statistics from a seed, scaled to keep activations finite."""
    g = torch.Generator().manual_seed(seed)

    def draw(t: Tensor, scale: float, shift: float = 0.0, uniform: bool = False) -> None:
        t.copy_((torch.rand(t.shape, generator=g) if uniform else torch.randn(t.shape, generator=g)) * scale + shift)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                draw(m.weight, 0.5, 0.75, uniform=True)
                draw(m.bias, 0.1)
                draw(m.running_mean, 0.1)
                draw(m.running_var, 0.5, 0.75, uniform=True)
            elif isinstance(m, nn.Conv2d) and m.weight.requires_grad:  # DFL's fixed bins stay
                draw(m.weight, m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    draw(m.bias, 0.5)
    return model


def ultralytics_cfg(name: str) -> dict[str, Any]:
    """The yaml dict ultralytics ships for a name; ``-cbam``: its CBAM row after the last C2f."""
    cfg = tasks.yaml_model_load(f"{name.split('-')[0]}.yaml")
    cfg = {k: v for k, v in cfg.items() if k != "yaml_file"}
    return insert_row(cfg, 9, [-1, 1, "CBAM", [256]]) if name.endswith("-cbam") else cfg


@pytest.fixture(scope="session", autouse=True)
def ultralytics_knows_cbam() -> Iterator[None]:
    """ultralytics' parse_model finds yaml names among tasks.py's imports, where its own CBAM is
    not; users add the import, as here."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("CBAM", "ChannelAttention", "SpatialAttention"):
            mp.setattr(tasks, name, getattr(ultralytics_conv, name), raising=False)
        yield


@dataclass
class Saved:
    """One ultralytics model, randomised, saved by ``YOLO.save``; its outputs computed lazily."""

    path: Path
    reference: nn.Module  # ultralytics' model with the weights as saved (half precision)
    outputs: dict[str, Tensor] = field(default_factory=dict)
    loaded: list[AnchorFreeModel] = field(default_factory=list)

    def net(self) -> AnchorFreeModel:
        """Ours, read from the file through ``load_model`` (once per session)."""
        if not self.loaded:
            self.loaded.append(load_model(weights=self.path))
        return self.loaded[0]

    def output(self, size: str) -> Tensor:
        if size not in self.outputs:
            with torch.inference_mode():
                y = self.reference(image(size))
            self.outputs[size] = y[0] if isinstance(y, (tuple, list)) else y
        return self.outputs[size]


def image(size: str) -> Tensor:
    b, h, w = SIZES[size]
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h + w))


def save_with_ultralytics(folder: Path, name: str, cfg: dict[str, Any]) -> YOLO:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    model = YOLO(str(folder / f"{name}.yaml"), verbose=False)
    randomize(model.model)
    model.model.names = dict(NAMES) if cfg["nc"] == 80 else {i: f"c{i}" for i in range(cfg["nc"])}
    model.save(folder / f"{name}.pt")
    return model


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Saved]:
    folder = tmp_path_factory.mktemp("ultralytics")
    cache: dict[str, Saved] = {}

    def get(name: str) -> Saved:
        if name not in cache:
            model = save_with_ultralytics(folder, name, ultralytics_cfg(name))
            reference = copy.deepcopy(model.model).half().float().eval()
            cache[name] = Saved(folder / f"{name}.pt", reference)
        return cache[name]

    return get


def assert_outputs_match(ours: Tensor, theirs: Tensor, where: str) -> tuple[float, float]:
    assert ours.shape == theirs.shape, (where, ours.shape, theirs.shape)
    box = (ours[:, :4] - theirs[:, :4]).abs().max().item()
    score = (ours[:, 4:] - theirs[:, 4:]).abs().max().item()
    assert box <= BOX_ATOL and score <= SCORE_ATOL, f"{where}: boxes differ by {box:.3g} px, scores by {score:.3g}"
    return box, score


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_ultralytics_checkpoint_matches_ultralytics(saved: Callable[[str], Saved], name: str) -> None:
    ref = saved(name)
    net = ref.net()
    assert isinstance(net, AnchorFreeModel) and net.scale == "n" and net.names == list(NAMES.values())
    assert net.stride.tolist() == [8.0, 16.0, 32.0]
    for size in SIZES:
        with torch.inference_mode():
            ours = net(image(size))
        assert_outputs_match(ours, ref.output(size), f"{name} at {size}")
    if name.endswith("-cbam"):
        cbam = net.model[9]
        assert isinstance(cbam, CBAM) and cbam.spatial is not None and not cbam.spatial.max_first
        assert type(cbam.channel).__name__ == "ChannelFC"  # rebuilt in ultralytics' variant


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in MODELS if m != "yolov8n"])  # yolov8n-cbam holds its graph
def test_exported_onnx_matches_ultralytics(saved: Callable[[str], Saved], name: str, tmp_path: Path) -> None:
    """The loaded model through our exporter, static (640x640 batch 2; 480x640) and dynamic, run by
    ONNX Runtime: still ultralytics' outputs. The exporter's own parity check is skipped
    (``check=False``): this one, against ultralytics, is stricter."""
    import onnxruntime as ort

    from attn_deploy.exporter import ExportSpec, export_model

    ref = saved(name)
    static, dynamic = ExportSpec(imgsz=(640, 640), batch=2), ExportSpec(imgsz=(640, 640), batch=2, dynamic=True)
    non_square = ExportSpec(imgsz=(480, 640), batch=1)
    for spec, sizes in ((static, ["640x640"]), (non_square, ["480x640"]), (dynamic, list(SIZES))):
        result = export_model(ref.net(), tmp_path / f"{name}.onnx", spec, check=False)
        session = ort.InferenceSession(result.onnx, providers=["CPUExecutionProvider"])
        for size in sizes:
            (out,) = session.run(["output0"], {"images": image(size).numpy()})
            assert_outputs_match(torch.from_numpy(out), ref.output(size), f"{name}, ONNX ({spec}) at {size}")


def test_trainer_checkpoint_prefers_ema_and_reads_train_args(saved: Callable[[str], Saved], tmp_path: Path) -> None:
    """The trainer's last.pt/best.pt: EMA model with its IterableSimpleNamespace args, 'model': None."""
    ref = saved("yolov8n-cbam")
    theirs = copy.deepcopy(ref.reference)
    theirs.args = get_cfg(DEFAULT_CFG)  # as the trainer sets it: an IterableSimpleNamespace
    args = vars(get_cfg(DEFAULT_CFG))
    doc = {"epoch": 3, "best_fitness": 0.5, "model": None, "ema": theirs.half(), "updates": 12, "optimizer": None,
           "train_args": args, "train_metrics": {"fitness": 0.1}, "version": "8.4.190"}
    torch.save(doc, tmp_path / "best.pt")
    decoy = randomize(copy.deepcopy(theirs), seed=1)
    torch.save({**doc, "model": decoy}, tmp_path / "last.pt")
    expected = ref.net().state_dict()
    for file in ("best.pt", "last.pt"):
        net = load_model(weights=tmp_path / file)
        assert net.names == list(NAMES.values())
        got = net.state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got), file


TINY: dict[str, Any] = {  # every ultralytics attention row at a small size
    "nc": 3,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "CBAM", [32, 3]],
        [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "ChannelAttention", [32]],
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "CBAM", [64]], [-1, 1, "Conv", [64, 3, 2]],
    ],
    "head": [[[4, 6, 7], 1, "Detect", ["nc"]]],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    folder = tmp_path_factory.mktemp("tiny")
    model = save_with_ultralytics(folder, "tiny", TINY)
    return Saved(folder / "tiny.pt", copy.deepcopy(model.model).half().float().eval())


def _tiny_outputs(net: nn.Module, theirs: nn.Module) -> None:
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = theirs(x)
        assert_outputs_match(net(x), y[0] if isinstance(y, (tuple, list)) else y, "tiny")


def test_ultralytics_attention_rows_in_their_variant(tiny: Saved) -> None:
    """CBAM (kernel 3 and 7) and ChannelAttention alone, rebuilt from the records' tensors."""
    net = load_model(weights=tiny.path)
    assert net.model[2].spatial.conv.kernel_size == (3, 3) and net.model[6].spatial.conv.kernel_size == (7, 7)
    assert net.model[4].spatial is None and type(net.model[4].channel).__name__ == "ChannelFC"
    _tiny_outputs(net, tiny.reference)


def test_plain_state_dict_with_an_ultralytics_yaml(tiny: Saved, tmp_path: Path) -> None:
    """A state dict alone names no classes: the yaml (--cfg) builds, the tensors' names and
    shapes pick each attention row's variant."""
    theirs = tiny.reference
    torch.save(theirs.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    net = load_model(cfg=tmp_path / "tiny.yaml", weights=tmp_path / "sd.pt")
    assert isinstance(net, AnchorFreeModel) and net.detect.nc == 3
    _tiny_outputs(net, theirs)
    with pytest.raises(UserError, match="plain state dict"):
        load_model(weights=tmp_path / "sd.pt")


def test_a_channel_attention_row_builds_the_channel_gate_alone(tmp_path: Path) -> None:
    """--cfg without weights: the row's class name alone says the variant."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    net = load_model(cfg=tmp_path / "tiny.yaml")
    theirs = tasks.DetectionModel(copy.deepcopy(TINY), verbose=False)
    assert sum(p.numel() for p in net.model[4].parameters()) == sum(p.numel() for p in theirs.model[4].parameters())


def test_spatial_attention_row_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = copy.deepcopy(TINY)
    cfg["backbone"][4] = [-1, 1, "SpatialAttention", [7]]
    save_with_ultralytics(tmp_path, "spatial", cfg)
    with pytest.raises(UserError) as e:
        load_model(weights=tmp_path / "spatial.pt")
    text = str(e.value)
    assert "SpatialAttention" in text and "\n" not in text and len(text) < 300, text
