"""Models with INT8 fake quantization in them (NVIDIA Model Optimizer's torch quantization), for
quantization-aware fine-tuning, and their place in our checkpoints.

TensorRT folds every BatchNorm into the convolution before it and quantizes the folded weights,
so a model is folded first (``fused``) and quantized after: what is fine-tuned is what runs.
Model Optimizer's INT8 configuration puts a quantizer on every convolution's input (per
tensor) and weights (per output channel), calibrated with the largest value seen on
calibration images; ``torch.onnx.export`` then writes each as QuantizeLinear/DequantizeLinear.
The Detect head's output convolutions are then left in float (``head_outputs``: why).
A quantized model is saved as our checkpoint with Model Optimizer's own state beside the
tensors (``qat``: plain data), and comes back through the same safe loader: built from its
yaml, folded, its quantizers restored, its tensors loaded.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from attn_deploy.errors import UserError
from attn_deploy.files import quiet

CALIBRATION_BATCH = 8


def fused(model: nn.Module) -> nn.Module:
    """A copy with every Conv-BatchNorm pair folded into one biased Conv (``model`` is left as is).

    The folding is computed in float64, so the folded weights are the float32 nearest to the
    exact ones. Node names keep their scope (``/model.3/conv/Conv``): the BatchNorm becomes an
    Identity, which traces to nothing.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from attn_deploy.models.common import Conv

    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv, m.bn = fuse_conv_bn_eval(m.conv.double(), m.bn.double()).float(), nn.Identity()
    return out


def _modelopt() -> tuple[Any, Any]:
    try:
        with warnings.catch_warnings(), quiet():  # it warns about the LLM libraries it would plug into
            warnings.simplefilter("ignore")
            import modelopt.torch.opt as mto
            import modelopt.torch.quantization as mtq
    except ImportError as e:
        raise UserError(f"NVIDIA Model Optimizer's torch quantization is not importable ({e})",
                        "pip install nvidia-modelopt==0.47.* huggingface_hub requests") from None
    return mtq, mto


def quantize_model(model: nn.Module, images: np.ndarray) -> nn.Module:
    """A folded copy of ``model`` with INT8 fake quantization, its activation ranges calibrated on
    ``images`` (N, 3, H, W float32 in [0, 1]); ``model`` is left as is."""
    mtq, _ = _modelopt()
    net = fused(model).eval()
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))

    def calibrate(m: nn.Module) -> None:
        with torch.no_grad():
            for i in range(0, len(x), CALIBRATION_BATCH):
                m(x[i:i + CALIBRATION_BATCH])

    with warnings.catch_warnings(), quiet():  # it prints how many quantizers it inserted
        warnings.simplefilter("ignore")
        net = mtq.quantize(net, mtq.INT8_DEFAULT_CFG, calibrate)
    modules = dict(net.named_modules())
    for name in head_outputs(net):
        for quantizer in ("input_quantizer", "weight_quantizer", "output_quantizer"):
            if hasattr(modules[name], quantizer):
                getattr(modules[name], quantizer).disable()
    return net


def head_outputs(model: nn.Module) -> list[str]:
    """The Detect's output convolutions, by module name: its convolutions that are not a Conv
    block's (the last of each branch, whose outputs are the raw predictions, and the DFL's).

    They stay in float (about 1 % of a nano model's MACs): with everything else in INT8 they hold
    most of the rounding damage, because the boxes come straight out of them. Measured on the
    demos (300 val images, mAP50-95 points lost; yolov5n-ca, yolov5n-cbam, yolo11n-ca): all in
    INT8, 3.56, 1.65, 2.09; these in float, the rest INT8 (fake quantization, no fine-tuning),
    1.06, 0.58, 0.06. ``calib/rank.py``'s ``is_output_conv`` picks the same convolutions in the
    ONNX graph."""
    from attn_deploy.models.common import Conv

    modules = dict(model.named_modules())
    head = next((n for n, m in modules.items() if m is getattr(model, "detect", None)), None)
    if head is None:
        return []
    return [n for n, m in modules.items() if n.startswith(head + ".") and isinstance(m, nn.Conv2d)
            and not isinstance(modules[n.rsplit(".", 1)[0]], Conv)]


def is_quantized(model: nn.Module) -> bool:
    return any(type(m).__name__ == "TensorQuantizer" for m in model.modules())


def quantizer_state(model: nn.Module) -> dict[str, Any]:
    """Model Optimizer's description of the quantizers (plain data: names, bit widths, axes)."""
    _, mto = _modelopt()
    with warnings.catch_warnings(), quiet():
        warnings.simplefilter("ignore")
        return mto.modelopt_state(model)


def restore_quantized(model: nn.Module, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> nn.Module:
    """``model`` (built from the checkpoint's yaml) folded, its quantizers restored from
    ``state`` and its tensors (folded weights, quantizer ranges) loaded."""
    _, mto = _modelopt()
    net = fused(model)
    try:
        with warnings.catch_warnings(), quiet():  # it prints what it restores, and warns of devices
            warnings.simplefilter("ignore")
            net = mto.restore_from_modelopt_state(net, state)
            net.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"the quantized checkpoint does not fit its own model: {str(e).splitlines()[0][:120]}") from e
    return net.eval()
