"""Markers that need hardware this project's CI does not have become skips with the reason."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
import torch


def _reason(marker: str) -> str | None:
    if marker == "needs_cuda" and not torch.cuda.is_available():
        return ("needs an NVIDIA GPU and a CUDA build of torch (pip install torch from the CUDA index on a GPU "
                "machine); CI and dev machines have neither")
    if marker == "needs_trt" and importlib.util.find_spec("tensorrt") is None:
        return ("needs TensorRT (pip install tensorrt from NVIDIA's index, on a GPU machine), which cannot be "
                "installed here: that index is unreachable")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in ("needs_cuda", "needs_trt"):
            if item.get_closest_marker(marker) and (reason := _reason(marker)):
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker takes its share of the cores (torch would take them all)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_user_blocks() -> Iterator[None]:
    """Each test starts and ends with no user blocks registered (the registry is per process)."""
    from attn_deploy import blocks

    blocks.clear()
    yield
    blocks.clear()
