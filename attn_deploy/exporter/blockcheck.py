"""Checks of the user's own blocks (``attn_deploy/blocks.py``): in a model before export, and
alone for ``attn-deploy blocks FILE.py``.

A registered block must keep its declared output shape at two input sizes (the channel count
its rule declared; an output size that follows the input's, the same ratio at both sizes:
a size fixed in the block's code is the silent trap of another HxW), export to ONNX with
dynamic H and W, pass lint, and agree with PyTorch in ONNX Runtime at the other size. When
the exporter cannot export a block at all, the user gets one line naming the block, the op
and the usual rewrite, not the exporter's traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attn_deploy.blocks import UserBlock, find_block
from attn_deploy.errors import UserError, one_line
from attn_deploy.exporter.torch2onnx import export_legacy
from attn_deploy.models.rows import LayerWatch

# (the exporter's words, the op, the usual rewrite): attn_deploy.ops has an exact drop-in for most
REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"adaptive_max"), "attn_deploy.ops.adaptive_max_pool2d(x, size): exact at any size, up or down"),
    (re.compile(r"adaptive"), "attn_deploy.ops.adaptive_avg_pool2d(x, size): exact at any size, up or down"),
    (re.compile(r"upsample|interpolate|resize", re.I), "attn_deploy.ops.interpolate(x, y.shape[-2:], mode), or a "
     "fixed scale_factor"),
    (re.compile(r"scaled_dot_product|flash|attention", re.I), "attn_deploy.ops.scaled_dot_product_attention (or "
     "ops.flash_attn_func): softmax(QK^T)V written out"),
    (re.compile(r"einsum"), "attn_deploy.ops.einsum(equation, a, b): a permutation and one MatMul"),
    (re.compile(r"roll"), "attn_deploy.ops.roll(x, shifts, dims): two slices concatenated"),
    (re.compile(r"unfold|im2col|col2im"), "attn_deploy.ops.unfold(x, kernel_size, ...): a grouped convolution"),
    (re.compile(r"linalg|inverse|svd|eig|cholesky|det\b"), "linear algebra has no ONNX op: precompute it, or "
     "rewrite with matmuls"),
    (re.compile(r"diag|eye"), "build the mask with arange and a comparison"),
]
GENERIC = "rewrite it with standard tensor ops (TensorRT's support table: 'attn-deploy lint')"
SIZES = ((2, 3), (3, 2))  # in multiples of the largest stride: two sizes, neither square


@dataclass
class BlockCheck:
    """What ``attn-deploy blocks`` found for one registered block."""

    block: str
    origin: str
    names: list[str]
    rule: str
    shapes: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    lint: list[str] = field(default_factory=list)
    max_error: float | None = None
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and not self.lint

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "passed": self.passed}


def export_failure(name: str, e: BaseException) -> str:
    """One line for an exporter failure inside block ``name``: the op and the usual rewrite."""
    text = str(e)
    m = (re.search(r"ONNX export of operator ([\w:. ]+?)(?:, ([^.\[(]+))?\.", text)
         or re.search(r"operator '?([\w:.]+)'? to ONNX opset version \d+", text))
    op = m.group(1) if m else type(e).__name__
    why = f" ({one_line(m.group(2), 60)})" if m and m.lastindex and m.lastindex > 1 and m.group(2) else ""
    fix = next((f for pattern, f in REWRITES if pattern.search(op) or (not m and pattern.search(text))), GENERIC)
    if not m:
        return f"{name}: the ONNX exporter failed ({type(e).__name__}: {one_line(text, 80)}); {fix}"
    return f"{name}: the ONNX exporter cannot export {op}{why}; the usual rewrite: {fix}"


def user_layers(net: nn.Module) -> dict[int, UserBlock]:
    """Yaml layer index -> the user block built for it."""
    out = {}
    for i, layer in enumerate(getattr(net, "model", [])):
        entry = find_block(str(getattr(layer, "type", ""))) if getattr(layer, "user_block", None) else None
        if entry is not None:
            out[i] = entry
    return out


def block_files(net: nn.Module) -> list[str]:
    """The block files (as given to ``--blocks``) that ``net``'s own layers were built from; an
    installed package's blocks (origin: its module) register themselves and are not listed."""
    return sorted({e.origin for e in user_layers(net).values() if e.origin.endswith(".py")})


def _label(i: int, entry: UserBlock) -> str:
    return f"layer {i} ({entry.name}, from {entry.origin})"


def check_model_blocks(net: nn.Module) -> dict[int, tuple[int, ...]]:
    """Every user layer of ``net`` keeps its declared shape at two sizes; a user error otherwise.
    Returns each user layer's input shape at the first size (empty for a model with none:
    nothing is run then)."""
    layers = user_layers(net)
    if not layers:
        return {}
    s = int(net.stride.max())
    with LayerWatch(net.model) as watch:
        for h, w in SIZES:
            x = torch.zeros(1, net.yaml.get("ch", 3), h * s, w * s)
            try:
                with torch.no_grad():
                    net(x)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - the user's forward may raise anything: say whose
                why = watch.blame(e, f"at input {h * s}x{w * s}")
                if why is None:
                    raise
                raise UserError(why) from e
    seen = watch.shapes
    for i, entry in layers.items():
        _check_shapes(_label(i, entry), seen[i], int(net.out_channels[i]))
    return {i: seen[i][0][0] for i in layers}


def explain_export_failure(net: nn.Module, inputs: dict[int, tuple[int, ...]], e: BaseException) -> UserError | None:
    """The user layer the exporter cannot export, found by exporting each alone: one line with
    the op and the usual rewrite; None when none fails alone (then it is not theirs)."""
    layers = user_layers(net)
    for i, shape in inputs.items():
        try:
            export_legacy(net.model[i], torch.zeros(shape), opset_version=17)
        except Exception as alone:  # noqa: BLE001 - this one is the culprit
            return UserError(export_failure(_label(i, layers[i]), alone), detail=exporter_log(alone))
    return None


def exporter_log(e: BaseException) -> str | None:
    """What the exporter printed before it raised ``e`` (``torch2onnx.export_legacy``), for --verbose."""
    log = getattr(e, "exporter_log", None)
    return f"{type(e).__name__}: {e}\n{log.text}" if log is not None else None


def _check_shapes(where: str, seen: list[tuple[tuple[int, ...], tuple[int, ...]]], channels: int) -> list[str]:
    """Channels as declared, spatial size a fixed ratio of the input's; the shapes as text."""
    text = [f"{'x'.join(map(str, a[1:]))} -> {'x'.join(map(str, b[1:]))}" for a, b in seen]
    for _, out in seen:
        if len(out) != 4 or out[1] != channels:
            raise UserError(f"{where}: output {list(out)}, but its channel rule declared {channels} channels "
                            "(N, C, H, W)")
    ratios = {(a[2] / b[2], a[3] / b[3]) for a, b in seen}
    if len(ratios) > 1:
        raise UserError(f"{where}: its output size does not follow its input's ({'; '.join(text)}): "
                        "a size fixed in its code exports wrong at other sizes")
    return text


def check_block(entry: UserBlock, opset: int = 17) -> BlockCheck:
    """Build one registered block from its example row, alone, and check it all the way:
    shapes at two sizes, ONNX export with dynamic H and W, lint, ONNX Runtime vs PyTorch."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from attn_deploy.exporter.lint import lint_onnx

    result = BlockCheck(entry.name, entry.origin, list(entry.names), entry.rule_name)
    c1 = entry.example_channels
    try:
        made, c2, n = entry.constructor_args([c1], list(entry.example), 1, lambda c: int(c))
        module = entry.cls(*made).eval()
    except Exception as e:  # noqa: BLE001 - the user's constructor or rule: named, not a traceback
        result.problem = (f"cannot build it from example={list(entry.example)} with {c1} input channels: "
                          f"{type(e).__name__}: {one_line(str(e), 80)} (give @block(..., example=[row args]))")
        return result
    inputs = [torch.rand(1, c1, 16 * h, 16 * w, generator=torch.Generator().manual_seed(0)) for h, w in SIZES]
    try:
        with torch.no_grad():
            outputs = [module(x) for x in inputs]
        result.shapes = _check_shapes("it", [(tuple(x.shape), tuple(y.shape)) for x, y in zip(inputs, outputs)], c2)
    except UserError as e:
        result.problem = e.message.removeprefix("it: ")
        return result
    except Exception as e:  # noqa: BLE001
        result.problem = f"forward failed: {type(e).__name__}: {one_line(str(e), 100)}"
        return result
    try:
        graph = export_legacy(module, inputs[0], opset_version=opset, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h2", 3: "w2"}})
    except Exception as e:  # noqa: BLE001 - the exporter's many failures, translated
        result.problem = export_failure("export", e).removeprefix("export: ")
        return result
    proto = onnx.load_from_string(graph)
    for node in proto.graph.node:
        result.ops[node.op_type] = result.ops.get(node.op_type, 0) + 1
    result.lint = [f"{f.node} ({f.op}): {f.reason}" for f in lint_onnx(proto).findings]
    try:
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": inputs[1].numpy()})[0]
    except Exception as e:  # noqa: BLE001 - ONNX Runtime refusing the graph is a finding
        result.problem = f"ONNX Runtime cannot run its graph: {one_line(str(e), 100)}"
        return result
    want = outputs[1].numpy()
    if got.shape != want.shape:
        result.problem = f"its ONNX graph gives {list(got.shape)} at the second size, PyTorch {list(want.shape)}"
        return result
    result.max_error = float(np.abs(got - want).max()) if want.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    if result.max_error > 1e-4 * max(1.0, scale):
        result.problem = (f"its ONNX graph differs from PyTorch at the second size by {result.max_error:.3g} "
                          f"(exported at one size, wrong at another{_frozen_size_hint(entry.cls)})")
    return result


def _frozen_size_hint(cls: type) -> str:
    """Where the block's source calls an op that freezes sizes at export: the drop-in to use."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return ""
    found = [fix for pattern, fix in REWRITES[:3] if pattern.search(source)]  # pooling, resizing
    return f"; use {found[0]}" if found else ""


def name_lint_findings(net: nn.Module, findings: list[Any]) -> None:
    """Prefix each lint finding inside a user block's nodes with the block's name (in place)."""
    from attn_deploy.onnxfile import layer_of

    layers = user_layers(net)
    for f in findings:
        layer = layer_of(f.node)
        if layer in layers:
            f.reason = f"{_label(layer, layers[layer])}: {f.reason}"
