"""How much of an INT8 graph is INT8: the share of the model's multiply-accumulates that run
with both their data and their weights quantized.

An INT8 graph within its accuracy budget can be INT8 in name only: keep every layer out and
the damage is zero. On small YOLOs the whole INT8 gain over FP16 is 1.2-1.5x on a GPU, so
every layer left in float is speed given back; coverage is what INT8 is for, and calib reports
and gates it. The MACs of each convolution, matmul and Gemm come from the float32 graph's
shapes (``onnx.shape_inference``; calib's graphs have a fixed input size): a Conv makes each
output value from C_in / groups x kh x kw products, a MatMul from its shared dimension. A node
of the Q/DQ graph counts as INT8 when its data input and its weight (a MatMul: both inputs)
are read through a DequantizeLinear: what TensorRT fuses into an INT8 kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from attn_deploy.onnxfile import COMPUTE, layer_of

@dataclass
class Coverage:
    """MACs in INT8 and in float, with what runs in float by node and by yaml layer."""

    total: int
    int8: int
    floating: dict[str, int] = field(default_factory=dict)  # node name -> MACs

    @property
    def share(self) -> float:
        return self.int8 / self.total if self.total else 0.0

    def by_layer(self) -> dict[str, float]:
        """Share of the model's MACs each yaml layer keeps in float (``model.N``; other nodes apart)."""
        layers: dict[str, int] = {}
        for name, macs in self.floating.items():
            layer = layer_of(name)
            key = f"model.{layer}" if layer is not None else name
            layers[key] = layers.get(key, 0) + macs
        return {k: v / self.total for k, v in sorted(layers.items(), key=lambda kv: -kv[1])} if self.total else {}

    def to_dict(self) -> dict[str, Any]:
        return {"int8_share": round(self.share, 4), "macs": self.total, "int8_macs": self.int8,
                "float_macs": self.total - self.int8, "float_layers": {k: round(v, 4) for k, v in self.by_layer().items()}}


def coverage(qdq: onnx.ModelProto, macs: dict[str, int]) -> Coverage:
    """The INT8 share of ``macs`` (from the float graph, ``node_macs``) in the Q/DQ graph ``qdq``."""
    made = {o: n.op_type for n in qdq.graph.node for o in n.output}
    quantized = {n.name for n in qdq.graph.node if n.op_type in COMPUTE and len(n.input) > 1
                 and all(made.get(t) == "DequantizeLinear" for t in n.input[:2])}
    result = Coverage(total=sum(macs.values()), int8=0)
    for name, m in macs.items():
        if name in quantized:
            result.int8 += m
        else:
            result.floating[name] = m
    return result


def macs_out(macs: dict[str, int], nodes: list[str]) -> int:
    """MACs of ``nodes`` (the compute nodes a kept-out set takes out of INT8)."""
    return sum(macs.get(n, 0) for n in set(nodes))
