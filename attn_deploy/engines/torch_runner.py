"""The PyTorch model itself, behind the runner interface (the reference side of parity)."""

from __future__ import annotations

import numpy as np
import torch

from attn_deploy.engines.base import Runner, TensorSpec


class TorchRunner(Runner):
    name = "pytorch"

    def __init__(self, model: torch.nn.Module, input_name: str = "images", output_name: str = "output0") -> None:
        super().__init__()
        self.model = model.eval()
        self.input_name, self.output_name = input_name, output_name

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(self.input_name, ("batch", 3, "height", "width"), "float32")]

    def output_names(self) -> list[str]:
        return [self.output_name]

    def run_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(feed[self.input_name])))
        return {self.output_name: out.numpy()}
