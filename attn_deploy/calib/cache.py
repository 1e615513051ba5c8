"""TensorRT's calibration cache (implicit INT8, TensorRT 8.x-10.x), from our Q/DQ graph.

The cache is text: a header line ``TRT-<version>-<Algorithm>``, then ``tensor: scale`` lines,
each scale a big-endian float32 in hex, scale = amax / 127. Every activation QuantizeLinear
of the calibrated Q/DQ graph gives one line, under the name its input tensor has in the
float32 ONNX, which is the name TensorRT's parser gives it: so a Jetson on JetPack 5/6 builds
the float32 ONNX in implicit INT8 with exactly the ranges ``calib`` measured and proved.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from attn_deploy.engines.calibrator import HEADER, read_cache
from attn_deploy.files import atomic_write

__all__ = ["HEADER", "activation_scales", "read_cache", "write_cache"]


def activation_scales(qdq: onnx.ModelProto) -> dict[str, float]:
    """Per-tensor scales of the activation (non-initializer) QuantizeLinear inputs."""
    inits = {t.name: t for t in qdq.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in qdq.graph.node if n.op_type == "Constant" and n.attribute}
    scales = {}
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        t = inits.get(node.input[1]) or consts.get(node.input[1])
        if t is None:
            continue
        value = numpy_helper.to_array(t)
        if value.size == 1:
            scales[node.input[0]] = float(value.reshape(()))
    return scales


def write_cache(scales: dict[str, float], path: str | Path, header: str = HEADER) -> Path:
    lines = [header] + [f"{name}: {struct.pack('>f', np.float32(s)).hex()}" for name, s in sorted(scales.items())]
    return atomic_write(path, ("\n".join(lines) + "\n").encode())
