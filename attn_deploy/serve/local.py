"""A real ``tritonserver`` on this machine, from NVIDIA's ``nvidia-pytriton`` wheel.

The wheel carries Triton's server binary with its python backend (no onnxruntime or
tensorrt backend), the libraries it links (``nvidia_pytriton.libs``) and a python-backend
stub per Python version. ``LocalTriton`` assembles a backend folder with the stub of this
Python, starts the server on free ports over a model repository, waits until it is ready and
stops it on exit: what the tests and ``benchmarks/serve_bench.py`` serve through. It runs on
a CPU; a production server is NVIDIA's container with the native backends.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from attn_deploy.errors import UserError


def pytriton_root() -> Path | None:
    """The installed ``pytriton`` package folder (found without importing it: its Python
    side wants numpy < 2, and only the server binary is used here)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "tritonserver" / "bin" / "tritonserver").is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalTriton:
    """``with LocalTriton(repo) as server:`` a ready server; ``server.http``, ``server.grpc``,
    ``server.metrics`` are its ``host:port`` addresses; ``server.log`` its output so far."""

    def __init__(self, repository: str | Path, timeout_s: float = 120.0) -> None:
        root = pytriton_root()
        if root is None:
            raise UserError("no tritonserver here: pip install --no-deps nvidia-pytriton (its server binary is used)")
        self.root, self.repository, self.timeout_s = root, Path(repository), timeout_s
        self.ports = {k: _free_port() for k in ("http", "grpc", "metrics")}
        self.http, self.grpc, self.metrics = (f"127.0.0.1:{self.ports[k]}" for k in ("http", "grpc", "metrics"))
        self._dir = tempfile.TemporaryDirectory(prefix="attn-deploy-triton-")
        self._log = Path(self._dir.name) / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.is_file() else ""

    def _backends(self) -> Path:
        """Triton's python backend beside the stub built for this Python."""
        server = self.root / "tritonserver"
        stub = server / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
        if not stub.is_file():
            raise UserError(f"the pytriton wheel has no python-backend stub for Python {sys.version_info.major}."
                            f"{sys.version_info.minor}")
        python = Path(self._dir.name) / "backends" / "python"
        python.mkdir(parents=True)
        for f in (server / "backends" / "python").iterdir():
            if f.is_file():
                (python / f.name).symlink_to(f)
        (python / stub.name).symlink_to(stub)  # a link: the stub finds its libraries relative to its real place
        return python.parent

    def __enter__(self) -> LocalTriton:
        env = dict(os.environ)
        libs = self.root.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        cmd = [str(self.root / "tritonserver" / "bin" / "tritonserver"), f"--model-repository={self.repository.resolve()}",
               f"--backend-directory={self._backends()}", f"--http-port={self.ports['http']}",
               f"--grpc-port={self.ports['grpc']}", f"--metrics-port={self.ports['metrics']}", "--allow-metrics=true",
               "--exit-on-error=true", "--exit-timeout-secs=5"]  # its default waits 30 s for unloads
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import urllib.request

        end = time.monotonic() + self.timeout_s
        while time.monotonic() < end:
            if self._proc is not None and self._proc.poll() is not None:
                self.__exit__()
                raise UserError(f"tritonserver exited ({self._proc.returncode}) before it was ready: "
                                f"{self._last_error()}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise UserError(f"tritonserver was not ready after {self.timeout_s:.0f} s: {self._last_error()}")

    def _last_error(self) -> str:
        lines = [x for x in self.log.splitlines() if x.startswith("E") or "error" in x.lower()]
        return (lines[-1] if lines else "see its log")[:160]

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()
