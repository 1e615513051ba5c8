"""The runner interface every backend implements: named inputs in, named outputs out.

Modelled on Polygraphy's runners (``backend/base/runner.py``): a runner is activated (its
session or engine loaded), runs ``infer(feed)`` any number of times, and is deactivated; the
public method checks the feed against the runner's input names, then calls the backend's
``infer_impl``. Runners are context managers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attn_deploy.errors import UserError


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

    def input_names(self) -> list[str]:
        raise NotImplementedError

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            self.activate()
        missing = [n for n in self.input_names() if n not in feed]
        if missing:
            raise UserError(f"{self.name}: the feed lacks input(s) {missing} (it has {sorted(feed)})")
        return self.infer_impl(feed)

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
