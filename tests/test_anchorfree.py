"""The anchor-free family (YOLOv8, YOLO11, YOLO12, YOLO26): sizes, outputs, blocks, yaml errors.

Parameter counts are the ones each release publishes for its five scales; they are counted on
the meta device (no memory, no init), so the large scales cost nothing here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from attn_deploy.errors import UserError
from attn_deploy.models.anchorfree import build_anchor_free, guess_scale
from attn_deploy.models.anchorfree.area import A2C2f, AAttn, ABlock
from attn_deploy.models.anchorfree.blocks import SPPF, Bottleneck, C2f, C3k, C3k2, DWConv
from attn_deploy.models.anchorfree.head import DFL, Detect
from attn_deploy.models.anchorfree.psa import C2PSA, Attention, PSABlock
from attn_deploy.models.common import Conv
from attn_deploy.models.zoo import create_model, insert_row, model_config, model_names

PUBLISHED = {  # parameters, as each release's model yaml states them for n, s, m, l, x
    "yolov8": (3_157_200, 11_166_560, 25_902_640, 43_691_520, 68_229_648),
    "yolo11": (2_624_080, 9_458_752, 20_114_688, 25_372_160, 56_966_176),
    "yolo12": (2_602_288, 9_284_096, 20_199_168, 26_450_784, 59_210_784),
    "yolo26": (2_572_280, 10_009_784, 21_896_248, 26_299_704, 58_993_368),
}
CASES = [(f"{family}{s}", n) for family, counts in PUBLISHED.items() for s, n in zip("nsmlx", counts)]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def small_models() -> dict[str, nn.Module]:
    return {f: create_model(f"{f}n") for f in PUBLISHED}


@pytest.mark.parametrize(("name", "published"), CASES, ids=[c[0] for c in CASES])
def test_parameter_count_is_the_published_one(name: str, published: int) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert n_params(model) == published


def test_names_cover_four_families_of_five_scales() -> None:
    names = [n for f in ("yolov8", "yolo11", "yolo12", "yolo26") for n in model_names(f) if "-" not in n]
    assert len(names) == 20 and {"yolov8n", "yolo11x", "yolo12m", "yolo26s"} <= set(names)
    with pytest.raises(UserError, match="did you mean"):
        model_config("yolo11q")


@pytest.mark.parametrize("family", list(PUBLISHED))
def test_eval_output_is_decoded_boxes_then_scores(small_models: dict[str, nn.Module], family: str) -> None:
    model = small_models[family]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    with torch.no_grad():
        y = model(torch.rand(2, 3, 64, 96))
    anchors = sum((64 // s) * (96 // s) for s in (8, 16, 32))
    assert y.shape == (2, 4 + 80, anchors)
    boxes, scores = y[:, :4], y[:, 4:]
    assert torch.isfinite(y).all() and (scores >= 0).all() and (scores <= 1).all()
    assert (boxes[:, 2:] >= 0).all()  # widths and heights


def test_batch_items_do_not_mix(small_models: dict[str, nn.Module]) -> None:
    """Area attention folds strips into the batch axis: each image must still see only itself.
    (Also a second input size for a model that has already run on another one.)"""
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        both = small_models["yolo12"](x)
        one = small_models["yolo12"](x[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-3, rtol=1e-4)


def test_yolo26_head_picks_either_branch_pair(small_models: dict[str, nn.Module]) -> None:
    model = copy.deepcopy(small_models["yolo26"])
    detect = model.detect
    assert detect.end2end and detect.reg_max == 1 and isinstance(detect.dfl, nn.Identity)
    with torch.no_grad():  # the copies start equal; trained ones differ
        for conv in detect.one2one_cv3:
            conv[-1].bias.zero_()
        x = torch.rand(1, 3, 64, 64)
        many = model(x)
        detect.use_one2one = True
        one = model(x)
    assert many.shape == one.shape
    torch.testing.assert_close(one[:, 4:], torch.full_like(one[:, 4:], 0.5), atol=0.5, rtol=0)
    assert not torch.equal(many[:, 4:], one[:, 4:]) and torch.equal(many[:, :4], one[:, :4])


def test_the_scale_decides_c3k_and_the_area_residual() -> None:
    with torch.device("meta"):
        m11, n11 = create_model("yolo11m"), create_model("yolo11n")
        l12 = create_model("yolo12l")
        v8 = create_model("yolov8n")
    assert isinstance(m11.model[13].m[0], C3k)  # the row says c3k False; scale m says C3k
    assert isinstance(n11.model[13].m[0], Bottleneck)
    assert l12.model[6].gamma is not None and l12.model[11].gamma is None  # a2 rows only
    assert v8.detect.legacy and not n11.detect.legacy  # YOLOv8: a plain 3x3 class branch
    assert isinstance(n11.detect.cv3[0][0][0], DWConv) and not isinstance(v8.detect.cv3[0][0], nn.Sequential)


def test_scale_comes_from_the_name() -> None:
    assert [guess_scale(n) for n in ("yolov8n", "yolo11s.yaml", "yolo26x-cbam", "yolo12", "my")] == [
        "n", "s", "x", None, None]


def test_an_attention_row_builds_and_keeps_channels() -> None:
    cfg = insert_row(model_config("yolov8n"), 9, [-1, 1, "CBAM", [1024]])  # before SPPF
    model = build_anchor_free(cfg, "yolov8n-cbam")
    assert model.model[9].type == "CBAM" and len(model.model) == 24
    assert n_params(model) > PUBLISHED["yolov8"][0]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 96)).shape == (1, 84, 8 * 12 + 4 * 6 + 2 * 3)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ([-1, 1, "C2fX", [256]], "unknown module"),
        ([-1, 1, "C2f", ["many"]], "output channels"),
        ([7, 1, "Conv", [64, 3, 2]], "does not exist"),
        ([-1, 1, "CBAM", [64]], "does not match"),
        ([-1, 2, "C2f"], "expected [from, number, module, args]"),
    ],
)
def test_a_bad_row_is_one_line_naming_file_and_row(tmp_path: Path, row: list, words: str) -> None:
    cfg = model_config("yolo11n")
    cfg["backbone"].insert(2, row)
    path = tmp_path / "yolo11n-bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError) as e:
        build_anchor_free(path)
    text = str(e.value)
    assert "\n" not in text and words in text and "yolo11n-bad.yaml" in text and "row 2" in text


def test_bad_scalars_are_refused(tmp_path: Path) -> None:
    for key, value, words in (("scales", {"n": [1, 2]}, "'scales'"), ("reg_max", 0, "'reg_max'"),
                              ("nc", -1, "'nc'")):
        cfg = {**model_config("yolov8n"), key: value}
        with pytest.raises(UserError, match=words):
            build_anchor_free(cfg, "yolov8n")
    with pytest.raises(UserError, match="no scale 'q'"):
        build_anchor_free(model_config("yolov8n"), "m", scale="q")


def test_same_seed_same_weights(small_models: dict[str, nn.Module]) -> None:
    a, b = small_models["yolo11"], create_model("yolo11n")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


BLOCKS = {  # every block at batch 2 on an odd, non-square map (area attention: H*W % 4 == 0)
    "Conv": lambda: Conv(32, 64, 3, 2),
    "DWConv": lambda: DWConv(32, 32, 3),
    "Bottleneck": lambda: Bottleneck(32, 32),
    "C2f": lambda: C2f(32, 64, 2, True),
    "C3k": lambda: C3k(32, 64, 2),
    "C3k2": lambda: C3k2(32, 64, 1),
    "C3k2-c3k": lambda: C3k2(32, 64, 2, c3k=True),
    "C3k2-attn": lambda: C3k2(64, 128, 1, c3k=True, attn=True),
    "SPPF": lambda: SPPF(64, 64, 5),
    "SPPF-26": lambda: SPPF(64, 64, 5, 3, True),
    "Attention": lambda: Attention(64, num_heads=2, attn_ratio=0.5),
    "PSABlock": lambda: PSABlock(64, num_heads=1),
    "C2PSA": lambda: C2PSA(128, 128, 2),
    "AAttn": lambda: AAttn(64, num_heads=2, area=1),
    "AAttn-area4": lambda: AAttn(64, num_heads=2, area=4),
    "ABlock": lambda: ABlock(64, 2, 1.2, area=4),
    "A2C2f": lambda: A2C2f(64, 64, 1, a2=True, area=4, residual=True, mlp_ratio=1.2),
    "A2C2f-c3k": lambda: A2C2f(64, 64, 2, a2=False, area=-1),
}
CHANNELS_IN = {"C3k2-attn": 64, "SPPF": 64, "SPPF-26": 64, "Attention": 64, "PSABlock": 64, "C2PSA": 128,
               "AAttn": 64, "AAttn-area4": 64, "ABlock": 64, "A2C2f": 64, "A2C2f-c3k": 64}


@pytest.mark.parametrize("key", list(BLOCKS))
def test_every_block_runs_at_batch_two(key: str) -> None:
    torch.manual_seed(0)
    block = BLOCKS[key]().eval()
    x = torch.rand(2, CHANNELS_IN.get(key, 32), 9, 12)
    with torch.no_grad():
        y, alone = block(x), block(x[1:])
    assert y.shape[0] == 2 and torch.isfinite(y).all()
    torch.testing.assert_close(y[1:], alone, atol=1e-4, rtol=1e-4)


def test_dfl_is_the_expected_bin() -> None:
    logits = torch.full((2, 4 * 16, 5), -30.0)
    logits[:, 3::16] = 30.0  # every side certain of bin 3
    torch.testing.assert_close(DFL(16)(logits), torch.full((2, 4, 5), 3.0))


@pytest.mark.parametrize("reg_max", [16, 1])
@pytest.mark.parametrize("end2end", [False, True])
def test_detect_head_layout(reg_max: int, end2end: bool) -> None:
    head = Detect(nc=3, reg_max=reg_max, end2end=end2end, ch=[16, 32]).eval()
    head.stride.copy_(torch.tensor([8.0, 16.0]))
    xs = [torch.rand(2, 16, 6, 4), torch.rand(2, 32, 3, 2)]
    with torch.no_grad():
        y = head(xs)
    assert y.shape == (2, 4 + 3, 6 * 4 + 3 * 2)
    assert hasattr(head, "one2one_cv3") == end2end
    train = head.train()(xs)
    assert set(train) == ({"one2many", "one2one"} if end2end else {"one2many"})
