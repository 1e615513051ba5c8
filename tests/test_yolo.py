"""YOLOv5 from yaml: faithful sizes, attention insertion, the decode, user yaml files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from attn_deploy.errors import UserError
from attn_deploy.models import create_model, list_attention, load_model, model_info, model_names
from attn_deploy.models.attention import get_attention
from attn_deploy.models.zoo import YOLOV5, insert_row

# ultralytics/yolov5 model summaries (v6.0-v7.0, 80 classes); the models guide (docs/howto/models.md) rounds to 1.9M ... 86.7M
PARAMS = {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557, "l": 46_563_709, "x": 86_749_405}
PUBLISHED_M = {"n": 1.9, "s": 7.2, "m": 21.2, "l": 46.5, "x": 86.7}
PUBLISHED_GFLOPS = {"n": 4.5, "s": 16.5, "m": 49.0, "l": 109.1, "x": 205.7}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scale", list(PARAMS))
def test_parameter_counts_are_yolov5s_exactly(scale: str) -> None:
    m = create_model(f"yolov5{scale}")
    assert n_params(m) == PARAMS[scale]
    # the models guide's table rounds the fused model (BN folded: one parameter fewer per BN channel)
    bn_channels = sum(b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert round((n_params(m) - bn_channels) / 1e6, 1) == PUBLISHED_M[scale]


@pytest.mark.slow
@pytest.mark.parametrize("scale", list(PUBLISHED_GFLOPS))
def test_gflops_at_640_within_3_percent_of_published(scale: str) -> None:
    info = model_info(create_model(f"yolov5{scale}"), (640, 640))
    assert abs(info.gflops / PUBLISHED_GFLOPS[scale] - 1) < 0.03, info.gflops


def test_every_name_builds_and_attention_sits_before_sppf() -> None:
    names = model_names("yolov5")
    assert len(names) == 5 * (1 + len(list_attention()))
    base = n_params(create_model("yolov5n"))
    for key in list_attention():
        m = create_model(f"yolov5n-{key}")
        attn = m.model[9]
        assert isinstance(attn, get_attention(key).cls) and type(m.model[10]).__name__ == "SPPF"
        assert m.model[-1].f == [18, 21, 24] and m.model[20].f == [-1, 15] and m.model[23].f == [-1, 11]
        # the block runs at P5 of yolov5n: 1024 x 0.25 = 256 channels, and adds only its own weights
        assert n_params(m) - base == n_params(get_attention(key).cls(256)), key


@pytest.mark.parametrize("key", list_attention())
def test_odd_non_square_inputs_and_batches(key: str) -> None:
    m = create_model(f"yolov5n-{key}")
    with torch.no_grad():
        y = m(torch.rand(3, 3, 96, 160))
    cells = sum((96 // s) * (160 // s) for s in (8, 16, 32))
    assert y.shape == (3, 3 * cells, 85) and torch.isfinite(y).all()


def test_same_seed_same_model() -> None:
    a, b = create_model("yolov5n-ca").state_dict(), create_model("yolov5n-ca").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_decode_is_the_yolov5_formula() -> None:
    """xy = (2 sigmoid - 0.5 + grid) * stride, wh = (2 sigmoid)^2 * anchor_px, rest sigmoid."""
    m = create_model("yolov5n", nc=3)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y = m(x)
        m.detect.train()  # only the head: raw maps, with the backbone still in eval
        raw = m(x)
    m.eval()
    parts = []
    for i, p in enumerate(raw):  # (1, na, ny, nx, 8)
        s = float(m.stride[i])
        anchors_px = m.detect.anchors[i] * s
        _, na, ny, nx, _ = p.shape
        out = torch.empty_like(p)
        for a in range(na):
            for gy in range(ny):
                for gx in range(nx):
                    t = p[0, a, gy, gx].sigmoid()
                    out[0, a, gy, gx, 0] = (2 * t[0] - 0.5 + gx) * s
                    out[0, a, gy, gx, 1] = (2 * t[1] - 0.5 + gy) * s
                    out[0, a, gy, gx, 2:4] = (2 * t[2:4]) ** 2 * anchors_px[a]
                    out[0, a, gy, gx, 4:] = t[4:]
        parts.append(out.reshape(1, -1, 8))
    torch.testing.assert_close(y, torch.cat(parts, 1))
    assert m.stride.tolist() == [8.0, 16.0, 32.0]
    torch.testing.assert_close(m.detect.anchors[0] * 8, torch.tensor([[10.0, 13], [16, 30], [33, 23]]))


def test_insert_row_shifts_absolute_references() -> None:
    cfg = insert_row(YOLOV5, 9, [-1, 1, "se", [1024]])
    rows = cfg["backbone"] + cfg["head"]
    assert len(cfg["backbone"]) == 11 and rows[9][2] == "se" and rows[10][2] == "SPPF"
    assert [r[0] for r in rows[13:]] == [[-1, 6], -1, -1, -1, [-1, 4], -1, -1, [-1, 15], -1, -1, [-1, 11], -1, [18, 21, 24]]


def _yaml(tmp_path: Path, head_extra: str = "", backbone_extra: str = "", act: str = "") -> Path:
    text = f"""
    nc: 3
    depth_multiple: 0.33
    width_multiple: 0.25
    {act}
    anchors:
      - [10,13, 16,30, 33,23]
      - [30,61, 62,45, 59,119]
      - [116,90, 156,198, 373,326]
    backbone:
      [[-1, 1, Conv, [64, 6, 2, 2]],
       [-1, 1, Conv, [128, 3, 2]],
       [-1, 3, C3, [128]],
       [-1, 1, Conv, [256, 3, 2]],
       [-1, 6, C3, [256]],
       [-1, 1, Conv, [512, 3, 2]],
       [-1, 9, C3, [512]],
       [-1, 1, Conv, [1024, 3, 2]],
       [-1, 3, C3, [1024]],{backbone_extra}
       [-1, 1, SPPF, [1024, 5]],
      ]
    head:
      [[-1, 1, Conv, [512, 1, 1]],
       [-1, 1, nn.Upsample, [None, 2, 'nearest']],
       [[-1, 6], 1, Concat, [1]],
       [-1, 3, C3, [512, False]],
       [-1, 1, Conv, [256, 1, 1]],
       [-1, 1, nn.Upsample, [None, 2, 'nearest']],
       [[-1, 4], 1, Concat, [1]],
       [-1, 3, C3, [256, False]],
       [-1, 1, Conv, [256, 3, 2]],
       [[-1, 14], 1, Concat, [1]],
       [-1, 3, C3, [512, False]],
       [-1, 1, Conv, [512, 3, 2]],
       [[-1, 10], 1, Concat, [1]],
       [-1, 3, C3, [1024, False]],{head_extra}
       [[17, 20, 23], 1, Detect, [nc, anchors]],
      ]
    """
    p = tmp_path / "user.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_user_yaml_with_fork_class_names(tmp_path: Path) -> None:
    """YOLOAir-style rows: the class names forks write, extra arguments, a P5 head block."""
    path = _yaml(tmp_path, head_extra="\n       [-1, 1, CoordAtt, [1024]],", backbone_extra="")
    text = path.read_text().replace("[[17, 20, 23], 1, Detect", "[[17, 20, 24], 1, Detect")
    path.write_text(text)
    m = load_model(cfg=path)
    assert type(m.model[24]).__name__ == "CoordinateAttention" and m.detect.nc == 3 and m.name == "user"
    path2 = _yaml(tmp_path, backbone_extra="\n       [-1, 1, SEAttention, [1024, 8]],")
    text = path2.read_text()
    for old, new in (("[-1, 14]", "[-1, 15]"), ("[-1, 10]", "[-1, 11]"), ("[17, 20, 23]", "[18, 21, 24]")):
        text = text.replace(old, new)
    path2.write_text(text)
    m2 = load_model(cfg=path2)
    assert m2.model[9].fc1.out_channels == 256 // 8  # the reduction argument was honoured
    with torch.no_grad():
        assert m2(torch.rand(1, 3, 64, 64)).shape == (1, 3 * (64 + 16 + 4), 8)


def test_yaml_activation_key(tmp_path: Path) -> None:
    m = load_model(cfg=_yaml(tmp_path, act="activation: nn.LeakyReLU(0.1)"))
    acts = {type(mod.act) for mod in m.modules() if type(mod).__name__ == "Conv"}
    assert acts == {nn.LeakyReLU} and m.model[0].act.negative_slope == 0.1


@pytest.mark.parametrize(
    "extra,message",
    [
        ("\n       [-1, 1, CoordAttn, [1024]],", "row 9 (CoordAttn): unknown module 'CoordAttn' (did you mean CoordAtt"),
        ("\n       [-1, 1, Foo, [1024]],", "row 9 (Foo): unknown module 'Foo'"),
        ("\n       [-1, 1, SE, [512]],", "does not match its input's 256 channels"),
        ("\n       [-1, 1, SE, [1024, 4, 5, 6]],", "too many arguments"),
    ],
)
def test_bad_yaml_rows_are_one_clear_error(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        load_model(cfg=_yaml(tmp_path, backbone_extra=extra))
    assert message in str(e.value) and "user.yaml" in str(e.value)


def test_unknown_model_name_suggests_close_ones() -> None:
    with pytest.raises(UserError, match=r"unknown model 'yolov5s-caa'.*did you mean yolov5s-ca"):
        create_model("yolov5s-caa")
    assert create_model("yolov5n-CoordAtt").name == "yolov5n-ca"  # aliases work in names too


def test_missing_and_malformed_yaml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model yaml not found"):
        load_model(cfg=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: [[-1, 1, Conv]\n")
    with pytest.raises(UserError, match="not valid yaml"):
        load_model(cfg=bad)
    bad.write_text("nc: 3\n")
    with pytest.raises(UserError, match="has no 'anchors'"):
        load_model(cfg=bad)
