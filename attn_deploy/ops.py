"""Exportable drop-ins for the ops that forks use and ONNX exporters refuse or get wrong.

Each function computes what PyTorch's own op computes, at any input size (odd, non-square,
not a multiple of anything), and exports with ``torch.onnx.export`` (the TorchScript exporter we use)
to standard ONNX ops that TensorRT's parser takes, with the sizes following the input when H
and W are dynamic. Use them in a block file (``attn-deploy blocks``) where the exporter stops
or where ``blocks`` says a graph is right at one size and wrong at another:

============================================  ===============================================
PyTorch                                       drop-in
============================================  ===============================================
``F.adaptive_avg_pool2d(x, size)``            ``adaptive_avg_pool2d(x, size)`` (any ratio, up
                                              or down; ``size`` may be another tensor's)
``F.adaptive_max_pool2d(x, size)``            ``adaptive_max_pool2d(x, size)``
``F.interpolate(x, size=y.shape[-2:])``       ``interpolate(x, y.shape[-2:], mode)`` (nearest,
                                              bilinear; a size from another tensor)
``F.scaled_dot_product_attention(q, k, v)``   ``scaled_dot_product_attention(q, k, v)``
``flash_attn_func(q, k, v)``                  ``flash_attn_func(q, k, v)`` ((B, S, H, D) layout)
``torch.einsum(eq, a, b)``                    ``einsum(eq, a, b)`` (transposes and a MatMul)
``torch.roll(x, shifts, dims)``               ``roll(x, shifts, dims)`` (Slice and Concat)
``F.unfold(x, kernel_size, ...)``             ``unfold(x, kernel_size, ...)`` (a grouped Conv)
============================================  ===============================================

How: pooling and resizing are products with matrices built from the input's size with
``arange`` and comparisons (no adaptive pool, no Resize with computed scales); attention is
softmax(QK^T * scale + mask) V written out; einsum is a permutation, a reshape and one MatMul
(TensorRT 8.x's Einsum takes neither broadcasting nor most equations); roll is two slices
concatenated (no ``Mod``, which TensorRT 8.2 lacks); unfold is a convolution whose kernels
each pick one pixel. Sums in another order than PyTorch's differ by float rounding only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

Size = Any  # an int, or a sequence of ints or of 0-dim tensors (another tensor's shape[-2:])

__all__ = ["adaptive_avg_pool2d", "adaptive_max_pool2d", "einsum", "flash_attn_func", "interpolate", "roll",
           "scaled_dot_product_attention", "unfold"]


def _pair(size: Size) -> tuple[Any, Any]:
    if isinstance(size, int) or (isinstance(size, Tensor) and size.dim() == 0):
        return size, size
    h, w = size
    return h, w


def _axis(length: Any, like: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """(arange(length), length as a 1-element tensor): both follow a dynamic size in an export
    (a size turned into a tensor with torch.tensor would be frozen at the example's)."""
    j = torch.arange(length, dtype=dtype or like.dtype, device=like.device)
    return j, j[-1:] + 1


def _window_mask(length: Any, out: Any, like: Tensor) -> Tensor:
    """(out, length) booleans: input j lies in output i's window, [floor(i L / n), ceil((i + 1) L / n)),
    in integers, as PyTorch computes it (a float division could round across an integer)."""
    i, n = _axis(out, like, torch.int64)
    j, size = _axis(length, like, torch.int64)
    start = torch.div(i * size, n, rounding_mode="trunc")  # non-negative: trunc is floor, with no Mod
    end = torch.div((i + 1) * size + n - 1, n, rounding_mode="trunc")  # non-negative: trunc is floor, with no Mod
    return (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])


def _averaging(length: Any, out: Any, like: Tensor) -> Tensor:
    """(out, length): row i averages output i's window."""
    mask = _window_mask(length, out, like).to(like.dtype)
    return mask / mask.sum(1, keepdim=True)


def adaptive_avg_pool2d(x: Tensor, size: Size) -> Tensor:
    """``F.adaptive_avg_pool2d`` for any input and output size, up or down: A_h @ x @ A_w^T,
    with A's rows averaging each output's window exactly as PyTorch chooses them."""
    oh, ow = _pair(size)
    oh = x.shape[-2] if oh is None else oh
    ow = x.shape[-1] if ow is None else ow
    a_h = _averaging(x.shape[-2], oh, x)
    a_w = _averaging(x.shape[-1], ow, x)
    return torch.matmul(torch.matmul(a_h, x), a_w.transpose(0, 1))


def adaptive_max_pool2d(x: Tensor, size: Size) -> Tensor:
    """``F.adaptive_max_pool2d`` (values, not indices) for any sizes: each output's window
    masked in (the others at -inf) and reduced with a max, over H, then over W."""
    oh, ow = _pair(size)
    oh = x.shape[-2] if oh is None else oh
    ow = x.shape[-1] if ow is None else ow
    low = torch.finfo(x.dtype).min
    rows = _window_mask(x.shape[-2], oh, x)  # (oh, H)
    y = torch.where(rows[:, :, None], x.unsqueeze(-3), torch.full_like(x.unsqueeze(-3), low)).amax(-2)  # (.., oh, W)
    cols = _window_mask(x.shape[-1], ow, x)  # (ow, W)
    return torch.where(cols, y.unsqueeze(-2), torch.full_like(y.unsqueeze(-2), low)).amax(-1)  # (.., oh, ow)


def _nearest_index(length: Any, out: Any, like: Tensor) -> Tensor:
    """PyTorch's 'nearest': output i reads input floor(i * (length / out)), the scale in float."""
    i, n = _axis(out, like)
    _, size = _axis(length, like)
    return torch.minimum(torch.floor(i * (size / n)), size - 1).long()


def _linear_weights(length: Any, out: Any, like: Tensor, align_corners: bool) -> Tensor:
    """(out, length): PyTorch's 1-D linear interpolation as a matrix (two taps a row, one at the edge)."""
    i, n = _axis(out, like)
    j, size = _axis(length, like)
    if align_corners:
        src = i * ((size - 1) / torch.clamp(n - 1, min=1))
    else:
        src = torch.clamp((i + 0.5) * (size / n) - 0.5, min=0)
    lo = torch.minimum(torch.floor(src), size - 1)
    hi = torch.minimum(lo + 1, size - 1)
    frac = (src - lo)[:, None]
    return (j[None, :] == lo[:, None]).to(like.dtype) * (1 - frac) + (j[None, :] == hi[:, None]).to(like.dtype) * frac


def interpolate(x: Tensor, size: Size, mode: str = "nearest", align_corners: bool = False) -> Tensor:
    """``F.interpolate(x, size=size, mode=mode)`` where ``size`` may come from another tensor
    (``y.shape[-2:]``): a Gather per axis (nearest) or two MatMuls (bilinear), never a Resize
    whose sizes the exporter freezes at the example's."""
    oh, ow = _pair(size)
    if mode == "nearest":
        x = torch.index_select(x, -2, _nearest_index(x.shape[-2], oh, x))
        return torch.index_select(x, -1, _nearest_index(x.shape[-1], ow, x))
    if mode == "bilinear":
        w_h = _linear_weights(x.shape[-2], oh, x, align_corners)
        w_w = _linear_weights(x.shape[-1], ow, x, align_corners)
        return torch.matmul(torch.matmul(w_h, x), w_w.transpose(0, 1))
    raise ValueError(f"mode must be 'nearest' or 'bilinear', not {mode!r}")


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None) -> Tensor:
    """``F.scaled_dot_product_attention`` in inference: softmax(Q K^T * scale + mask) V, written
    out (MatMul, Mul, Add, Softmax); a boolean mask keeps where True, as PyTorch's does."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        rows = torch.arange(q.shape[-2], device=q.device)[:, None]
        cols = torch.arange(k.shape[-2], device=q.device)[None, :]
        scores = scores.masked_fill(cols > rows, float("-inf"))
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    return torch.matmul(scores.softmax(-1), v)


def flash_attn_func(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, softmax_scale: float | None = None,
                    causal: bool = False) -> Tensor:
    """flash-attn's ``flash_attn_func`` (inputs and output (B, S, heads, D)) in inference, on any device."""
    out = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2)


def einsum(equation: str, *operands: Tensor) -> Tensor:
    """``torch.einsum`` of one or two operands (no '...'), as a permutation, a reshape and one
    MatMul: indices in both inputs and the output batch it, in both inputs only are summed by
    the MatMul, in one input only are summed first."""
    lhs, _, out = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if "." in equation or not out and "->" not in equation or len(terms) != len(operands) or len(terms) > 2:
        raise ValueError(f"einsum {equation!r}: give an explicit output, no '...', and one or two operands")
    if len(terms) == 1:
        (a,), (ta,) = operands, terms
        a = a.sum([ta.index(c) for c in ta if c not in out]) if any(c not in out for c in ta) else a
        kept = "".join(c for c in ta if c in out)
        return a.permute([kept.index(c) for c in out])
    (a, b), (ta, tb) = operands, terms
    a, ta = _sum_alone(a, ta, tb + out)
    b, tb = _sum_alone(b, tb, ta + out)
    batch = [c for c in ta if c in tb and c in out]
    summed = [c for c in ta if c in tb and c not in out]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    dims = {c: a.shape[ta.index(c)] for c in ta} | {c: b.shape[tb.index(c)] for c in tb}
    a = a.permute([ta.index(c) for c in batch + left + summed]).reshape(
        *[dims[c] for c in batch], _product(dims, left), _product(dims, summed))
    b = b.permute([tb.index(c) for c in batch + summed + right]).reshape(
        *[dims[c] for c in batch], _product(dims, summed), _product(dims, right))
    y = torch.matmul(a, b).reshape(*[dims[c] for c in batch + left + right])
    order = batch + left + right
    return y.permute([order.index(c) for c in out])


def _sum_alone(x: Tensor, term: str, others: str) -> tuple[Tensor, str]:
    alone = [i for i, c in enumerate(term) if c not in others]
    if not alone:
        return x, term
    return x.sum(alone), "".join(c for c in term if c in others)


def _product(dims: dict[str, Any], names: Sequence[str]) -> Any:
    out: Any = 1
    for c in names:
        out = out * dims[c]
    return out


def roll(x: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int]) -> Tensor:
    """``torch.roll`` along given dims, as two slices concatenated per dim (|shift| below the size)."""
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    for s, d in zip(shifts, dims):
        if s:
            x = torch.cat((x.narrow(d, x.shape[d] - s, s), x.narrow(d, 0, x.shape[d] - s)), d) if s > 0 else \
                torch.cat((x.narrow(d, -s, x.shape[d] + s), x.narrow(d, 0, -s)), d)
    return x


def unfold(x: Tensor, kernel_size: int | tuple[int, int], dilation: int | tuple[int, int] = 1,
           padding: int | tuple[int, int] = 0, stride: int | tuple[int, int] = 1) -> Tensor:
    """``F.unfold`` (im2col): (B, C * kh * kw, L), as a grouped convolution whose kh * kw kernels
    per channel each pick one pixel of the window, in PyTorch's channel order."""
    kh, kw = _pair(kernel_size)
    c = int(x.shape[1])  # channels are fixed in a graph: the kernels are a constant of it
    pick = torch.eye(kh * kw, dtype=x.dtype, device=x.device).reshape(kh * kw, 1, kh, kw).repeat(c, 1, 1, 1)
    y = F.conv2d(x, pick, stride=stride, padding=padding, dilation=dilation, groups=c)
    return y.flatten(2)
