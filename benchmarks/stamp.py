"""The line that heads every table a benchmark writes: which script, when, with what, on what.

A results page includes what a script wrote, never a table typed by hand; this line is how a
reader knows where its figures come from. Make a ``Stamp`` when the run starts (it reads the
clock and the load average then) and call ``line`` when it ends:

    stamp = Stamp(__file__, ("attn-deploy", "torch", "onnxruntime"))
    ...
    text = stamp.line("at 640x640")

The machine these benchmarks run on is shared with other jobs, so the line gives the 1-minute
load average at the start and at the end beside the core count: a load above the cores means
the run competed for them, and its absolute times are slower and noisier than the machine's;
ratios taken within the run (as the scripts report them) suffer less.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CORE = ("attn-deploy", "torch", "onnxruntime")


def versions(packages: Sequence[str]) -> str:
    """``name VERSION`` for each installed package, ``name (not installed)`` for the others."""
    found = []
    for name in packages:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def cpu() -> str:
    """The CPU's model name, its architecture and the cores this process may use."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} CPU ({platform.machine()}, {cores} cores)"


def load_average() -> float | None:
    """The 1-minute load average, or None where the system has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class Stamp:
    """A run's provenance: started with the run, written out with its table."""

    def __init__(self, script: str | Path, packages: Sequence[str] = CORE) -> None:
        self.script = f"benchmarks/{Path(script).name}"
        self.packages = tuple(packages)
        self.start, self.load_start = time.perf_counter(), load_average()

    def line(self, setting: str = "", more: Sequence[str] = ()) -> str:
        """One sentence: ``Measured by `SCRIPT` on DATE [SETTING]: versions, CPU, load, wall time.``
        ``more`` adds versions found at run time (a server's, another environment's)."""
        load_end = load_average()
        if self.load_start is None or load_end is None:
            load = "load average unknown"
        else:
            load = (f"1-minute load average {self.load_start:.1f} at the start and {load_end:.1f} at the end "
                    "(a machine shared with other jobs; this run's own threads included)")
        stack = ", ".join([versions(self.packages), *more])
        when = f"{datetime.date.today()}" + (f" {setting}" if setting else "")
        return (f"Measured by `{self.script}` on {when}: {stack}, {cpu()}, {load}, "
                f"{time.perf_counter() - self.start:.0f} s of wall time.")
