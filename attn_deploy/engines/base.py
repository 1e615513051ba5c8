"""The runner interface every backend implements: named inputs in, named outputs out.

Modelled on Polygraphy's runners (``backend/base/runner.py``, where the method is called
``infer``): a runner is activated (its session or engine loaded), runs ``run(feed)`` any
number of times, and is deactivated; the public method checks the feed against the runner's
inputs, then calls the backend's ``run_impl``. Runners are context managers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attn_deploy.errors import UserError


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: a dimension is an int, or a str/None where it is dynamic."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # numpy name: float32, float16, int32, ...

    def fixed(self, axis: int) -> int | None:
        d = self.shape[axis] if axis < len(self.shape) else None
        return d if isinstance(d, int) and d > 0 else None


class Runner:
    name = "runner"

    def __init__(self) -> None:
        self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def inputs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def output_names(self) -> list[str]:
        raise NotImplementedError

    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            self.activate()
        missing = [n for n in self.input_names() if n not in feed]
        if missing:
            raise UserError(f"{self.name}: the feed lacks input(s) {missing} (it has {sorted(feed)})")
        return self.run_impl(feed)

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def run_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
