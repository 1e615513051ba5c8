"""``bench``: latency statistics as trtexec reports them, for every backend, and comparisons.

A workload's ``step()`` runs one batch and says how long it took: on the CPU, a host clock
around a synchronous call; on a GPU, CUDA events recorded on the stream around the
host-to-device copy, the compute and the device-to-host copy (``workloads.py``), never a host
clock around asynchronous work. Percentiles are nearest-rank (numpy's ``inverted_cdf``), as
trtexec takes them. Throughput is images per second of sequential batches,
``batch * 1000 / mean latency``: no overlap of successive batches is assumed.

``compare`` interleaves workloads in rounds, rotating their order every round, so that all of
them share the machine's drifts (thermal, other tenants) instead of one getting the quiet
minute and another the noisy one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from attn_deploy.errors import UserError

PARTS = ("h2d", "compute", "d2h")


@dataclass(frozen=True)
class LatencyStats:
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def from_ms(cls, samples: list[float] | np.ndarray) -> LatencyStats:
        x = np.asarray(samples, np.float64)
        if x.size == 0:
            raise ValueError("no samples")
        pct = {p: float(np.percentile(x, p, method="inverted_cdf")) for p in (50, 90, 95, 99)}
        return cls(float(x.min()), float(x.mean()), pct[50], pct[90], pct[95], pct[99], float(x.max()))

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


@dataclass
class Timing:
    """One step, in milliseconds; the parts only where the device is a GPU."""

    total: float
    h2d: float | None = None
    compute: float | None = None
    d2h: float | None = None


class Workload(Protocol):
    label: str
    backend: str
    precision: str
    batch: int
    imgsz: tuple[int, int]
    device: str

    def setup(self) -> None: ...

    def step(self) -> Timing: ...

    def close(self) -> None: ...


@dataclass
class BenchResult:
    label: str
    backend: str
    precision: str
    batch: int
    imgsz: tuple[int, int]
    device: str
    latency: LatencyStats
    iterations: int
    parts: dict[str, LatencyStats] = field(default_factory=dict)
    wall_s: float | None = None  # concurrent requests (bench --triton): images over this wall time

    @property
    def throughput(self) -> float:
        if self.wall_s:
            return self.batch * self.iterations / self.wall_s
        return self.batch * 1000.0 / self.latency.mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.label, "backend": self.backend, "precision": self.precision, "batch": self.batch,
            "imgsz": list(self.imgsz), "device": self.device, "iterations": self.iterations,
            "throughput": round(self.throughput, 2), "latency_ms": self.latency.to_dict(),
            **{f"{k}_ms": v.to_dict() for k, v in self.parts.items()},
        }


@dataclass(frozen=True)
class BenchOptions:
    warmup_s: float = 1.0
    iterations: int | None = None  # a count, or else run for duration_s
    duration_s: float = 3.0

    def check(self) -> None:
        if self.warmup_s < 0 or self.duration_s <= 0 or (self.iterations is not None and self.iterations < 1):
            raise UserError("--warmup must be >= 0, --duration > 0 and --iterations >= 1")


def result_of(w: Workload, timings: list[Timing]) -> BenchResult:
    parts = {p: LatencyStats.from_ms([getattr(t, p) for t in timings]) for p in PARTS
             if timings and getattr(timings[0], p) is not None}
    return BenchResult(w.label, w.backend, w.precision, w.batch, w.imgsz, w.device,
                       LatencyStats.from_ms([t.total for t in timings]), len(timings), parts)


def warm(w: Workload, seconds: float) -> None:
    """At least one step, then steps until ``seconds`` have passed."""
    end = time.perf_counter() + seconds
    w.step()
    while time.perf_counter() < end:
        w.step()


def measure(w: Workload, opts: BenchOptions) -> BenchResult:
    return compare([w], opts)[0]


def compare(workloads: list[Workload], opts: BenchOptions,
            progress: Callable[[int, int], None] | None = None, chunk: int = 5) -> list[BenchResult]:
    """Interleaved rounds of ``chunk`` steps per workload, the order rotated every round,
    until each has ``iterations`` steps (or the duration, split evenly, is used up)."""
    opts.check()
    for w in workloads:
        if len(workloads) > 1 and hasattr(w, "spinning"):
            w.spinning = False
        w.setup()
    try:
        for w in workloads:
            warm(w, opts.warmup_s)
        timings: list[list[Timing]] = [[] for _ in workloads]
        end = time.perf_counter() + opts.duration_s * len(workloads)
        rnd = 0
        while _more(timings, opts, end):
            n = len(workloads)
            for k in range(n):
                i = (rnd + k) % n
                want = chunk if opts.iterations is None else min(chunk, opts.iterations - len(timings[i]))
                timings[i] += [workloads[i].step() for _ in range(max(want, 0))]
            rnd += 1
            if progress:
                progress(min(len(t) for t in timings), opts.iterations or 0)
        return [result_of(w, t) for w, t in zip(workloads, timings)]
    finally:
        for w in workloads:
            w.close()


def _more(timings: list[list[Timing]], opts: BenchOptions, end: float) -> bool:
    if opts.iterations is not None:
        return min(len(t) for t in timings) < opts.iterations
    return time.perf_counter() < end or not all(timings)
