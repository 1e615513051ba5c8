"""``attn_deploy.ops``: each drop-in equals PyTorch's own op at many sizes (odd, non-square, not
divisible by the output), and its graph, exported once with dynamic H and W, equals PyTorch's op
at every other size under ONNX Runtime, with standard ops TensorRT's parser takes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from attn_deploy import ops
from attn_deploy.engines import OnnxrtRunner
from attn_deploy.exporter.lint import lint_onnx
from attn_deploy.exporter.torch2onnx import export_legacy

SIZES = [(7, 9), (5, 5), (13, 6), (20, 31), (3, 4), (33, 17), (64, 48), (1, 1)]  # H, W


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads 1, H*W, C): attention over pixels, as area attention does."""
    return x.flatten(2).transpose(1, 2).unsqueeze(1)


# name -> (ours, PyTorch's), each a function of x (B, C, H, W); sizes that follow another
# tensor's are given as x's own (y.shape[-2:] in a block)
CASES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "adaptive avg down to 5x5": (lambda x: ops.adaptive_avg_pool2d(x, 5), lambda x: F.adaptive_avg_pool2d(x, 5)),
    "adaptive avg to 1x1": (lambda x: ops.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1)),
    "adaptive avg (3, 7)": (lambda x: ops.adaptive_avg_pool2d(x, (3, 7)), lambda x: F.adaptive_avg_pool2d(x, (3, 7))),
    "adaptive avg 5x5 back up to HxW (MLCA)": (
        lambda x: ops.adaptive_avg_pool2d(ops.adaptive_avg_pool2d(x, 5), x.shape[-2:]),
        lambda x: F.adaptive_avg_pool2d(F.adaptive_avg_pool2d(x, 5), x.shape[-2:])),
    "adaptive avg (H, 1) and (1, W) (Coordinate Attention)": (
        lambda x: ops.adaptive_avg_pool2d(x, (None, 1)) + ops.adaptive_avg_pool2d(x, (1, None)),
        lambda x: F.adaptive_avg_pool2d(x, (None, 1)) + F.adaptive_avg_pool2d(x, (1, None))),
    "adaptive max down to (4, 3)": (lambda x: ops.adaptive_max_pool2d(x, (4, 3)),
                                    lambda x: F.adaptive_max_pool2d(x, (4, 3))),
    "adaptive max up to 2H x 2W": (lambda x: ops.adaptive_max_pool2d(x, (2 * x.shape[-2], 2 * x.shape[-1])),
                                   lambda x: F.adaptive_max_pool2d(x, (2 * x.shape[-2], 2 * x.shape[-1]))),
    "nearest to another tensor's size": (
        lambda x: ops.interpolate(x[..., ::2, ::3], x.shape[-2:], "nearest"),
        lambda x: F.interpolate(x[..., ::2, ::3], size=x.shape[-2:], mode="nearest")),
    "bilinear to another tensor's size": (
        lambda x: ops.interpolate(x[..., ::2, ::3], x.shape[-2:], "bilinear"),
        lambda x: F.interpolate(x[..., ::2, ::3], size=x.shape[-2:], mode="bilinear")),
    "bilinear, align_corners, to 5x7": (
        lambda x: ops.interpolate(x, (5, 7), "bilinear", align_corners=True),
        lambda x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True)),
    "scaled_dot_product_attention": (
        lambda x: ops.scaled_dot_product_attention(_tokens(x), _tokens(x) * 0.5, _tokens(x)),
        lambda x: F.scaled_dot_product_attention(_tokens(x), _tokens(x) * 0.5, _tokens(x))),
    "scaled_dot_product_attention, causal, scaled": (
        lambda x: ops.scaled_dot_product_attention(_tokens(x), _tokens(x), _tokens(x), is_causal=True, scale=0.3),
        lambda x: F.scaled_dot_product_attention(_tokens(x), _tokens(x), _tokens(x), is_causal=True, scale=0.3)),
    "flash_attn_func layout (B, S, heads, D)": (
        lambda x: ops.flash_attn_func(_tokens(x).transpose(1, 2), _tokens(x).transpose(1, 2),
                                      _tokens(x).transpose(1, 2)),
        lambda x: F.scaled_dot_product_attention(_tokens(x), _tokens(x), _tokens(x)).transpose(1, 2)),
    "einsum bnc,bmc->bnm": (lambda x: ops.einsum("bnc,bmc->bnm", x.flatten(2).transpose(1, 2), x.flatten(2).transpose(1, 2)),
                            lambda x: torch.einsum("bnc,bmc->bnm", x.flatten(2).transpose(1, 2), x.flatten(2).transpose(1, 2))),
    "einsum bchw,bc->bhw (a sum in one input)": (
        lambda x: ops.einsum("bchw,bc->bhw", x, x.mean((2, 3))),
        lambda x: torch.einsum("bchw,bc->bhw", x, x.mean((2, 3)))),
    "einsum bchw->bwhc": (lambda x: ops.einsum("bchw->bwhc", x), lambda x: torch.einsum("bchw->bwhc", x)),
    "roll (1, -1) over H, W": (lambda x: ops.roll(x, (1, -1), (2, 3)), lambda x: torch.roll(x, (1, -1), (2, 3))),
    "unfold 3x3, padding 1": (lambda x: ops.unfold(x, 3, padding=1), lambda x: F.unfold(x, 3, padding=1)),
    "unfold 2x2, stride 2, dilation 1": (lambda x: ops.unfold(x, 2, stride=2), lambda x: F.unfold(x, 2, stride=2)),
}


class _Op(torch.nn.Module):
    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


def _fits(name: str, h: int, w: int) -> bool:
    """Sizes the op itself is defined for (a 2x2 unfold needs 2 pixels; a roll of 1 needs 2)."""
    return not (("unfold 2x2" in name or "roll" in name or "::" in name) and min(h, w) < 2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_drop_in_equals_pytorch_at_every_size(name: str) -> None:
    ours, theirs = CASES[name]
    g = torch.Generator().manual_seed(0)
    checked = 0
    for h, w in SIZES:
        if not _fits(name, h, w):
            continue
        x = torch.randn(2, 4, h, w, generator=g)
        want = theirs(x)
        got = ours(x)
        assert got.shape == want.shape, (name, (h, w))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"{name} at {h}x{w}")
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("name", sorted(CASES))
def test_drop_in_exports_once_and_holds_at_every_size(name: str) -> None:
    ours, theirs = CASES[name]
    graph = export_legacy(_Op(ours).eval(), torch.randn(1, 4, 20, 24), opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    proto = onnx.load_from_string(graph)
    assert lint_onnx(proto).passed, lint_onnx(proto).findings
    assert not {n.op_type for n in proto.graph.node} & {"Mod", "Einsum", "Resize", "Col2Im"}, name
    g = torch.Generator().manual_seed(1)
    runner = OnnxrtRunner(graph)
    checked = 0
    for h, w in SIZES:
        if not _fits(name, h, w) or (h, w) == (20, 24):
            continue
        x = torch.randn(2, 4, h, w, generator=g)
        got = runner.run({"x": x.numpy()})["y"]
        want = theirs(x).numpy()
        assert got.shape == want.shape, (name, (h, w))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=f"{name} at {h}x{w}")
        checked += 1
    assert checked >= 6


def test_einsum_refuses_what_it_does_not_rewrite() -> None:
    a = torch.randn(2, 3)
    for eq in ("ij,jk", "...j,jk->...k", "ij,jk,kl->il"):
        with pytest.raises(ValueError, match="einsum"):
            ops.einsum(eq, *([a] * eq.split("->")[0].count(",")), a)
