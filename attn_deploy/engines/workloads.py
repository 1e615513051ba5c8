"""What ``bench`` times: one batch through PyTorch, ONNX Runtime or a TensorRT engine.

CPU backends are synchronous, so a host clock around the call is the latency. On a GPU the
step is three stages recorded with CUDA events on one stream: host-to-device copy, compute,
device-to-host copy; the host waits only on the last event.
"""

from __future__ import annotations

import ctypes
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attn_deploy.engines.bench import Timing
from attn_deploy.errors import UserError


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _images(batch: int, imgsz: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).random((batch, 3, *imgsz), dtype=np.float32)


@dataclass
class TorchWorkload:
    model: torch.nn.Module
    label: str
    batch: int
    imgsz: tuple[int, int]
    precision: str = "fp32"
    cuda: bool = False
    cuda_graph: bool = False
    backend: str = "torch"
    device: str = ""
    _state: dict[str, Any] = field(default_factory=dict)

    def setup(self) -> None:
        if (self.precision == "fp16" or self.cuda_graph) and not self.cuda:
            raise UserError("PyTorch fp16 and --cuda-graph are GPU settings: no CUDA device here")
        host = torch.from_numpy(_images(self.batch, self.imgsz))
        if not self.cuda:
            self.device, self._state = cpu_name(), {"x": host, "model": self.model.eval()}
            return
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = self.model.eval().cuda().to(dtype)
        self.device = torch.cuda.get_device_name(0)
        s = {"host": host.pin_memory(), "x": torch.empty(host.shape, device="cuda", dtype=dtype), "model": model,
             "events": [torch.cuda.Event(enable_timing=True) for _ in range(4)]}
        with torch.inference_mode():
            s["out"] = model(s["x"])
            s["out_host"] = torch.empty(s["out"].shape, dtype=s["out"].dtype, pin_memory=True)
            if self.cuda_graph:
                s["graph"] = _capture(model, s["x"])
                s["out"] = s["graph"][1]
        self._state = s

    def step(self) -> Timing:
        s = self._state
        if not self.cuda:
            t0 = time.perf_counter()
            with torch.inference_mode():
                s["model"](s["x"])
            return Timing((time.perf_counter() - t0) * 1000)
        e = s["events"]
        with torch.inference_mode():
            e[0].record()
            s["x"].copy_(s["host"], non_blocking=True)
            e[1].record()
            if "graph" in s:
                s["graph"][0].replay()
            else:
                s["out"] = s["model"](s["x"])
            e[2].record()
            s["out_host"].copy_(s["out"], non_blocking=True)
            e[3].record()
        e[3].synchronize()
        return Timing(e[0].elapsed_time(e[3]), e[0].elapsed_time(e[1]), e[1].elapsed_time(e[2]), e[2].elapsed_time(e[3]))

    def close(self) -> None:
        self._state = {}


def _capture(model: torch.nn.Module, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """A CUDA graph of the forward on the static input ``x`` (warmed up on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    return graph, out


@dataclass
class OrtWorkload:
    model: bytes | Path
    label: str
    batch: int
    imgsz: tuple[int, int]
    precision: str = "fp32"
    backend: str = "ort"
    device: str = ""
    spinning: bool = True  # off when other targets take turns: idle spinning threads steal their cores
    _state: dict[str, Any] = field(default_factory=dict)

    def setup(self) -> None:
        from attn_deploy.engines.onnxrt import OnnxrtRunner

        runner = OnnxrtRunner(self.model, spinning=self.spinning)
        runner.activate()
        self.device = cpu_name() + ", ONNX Runtime CPU"
        self._state = {"session": runner.session, "feed": {runner.input_names()[0]: _images(self.batch, self.imgsz)}}

    def step(self) -> Timing:
        t0 = time.perf_counter()
        self._state["session"].run(None, self._state["feed"])
        return Timing((time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        self._state = {}


class _Events:
    """cudaEvent* through the CUDA runtime library Polygraphy already loads (no pycuda)."""

    def __init__(self, n: int) -> None:
        from polygraphy import cuda

        self.lib, self.check = cuda.wrapper().handle, cuda.wrapper().check
        self.events = []
        for _ in range(n):
            ev = ctypes.c_void_p()
            self.check(self.lib.cudaEventCreate(ctypes.byref(ev)))
            self.events.append(ev)

    def record(self, i: int, stream: int) -> None:
        self.check(self.lib.cudaEventRecord(self.events[i], ctypes.c_void_p(stream)))

    def elapsed(self, a: int, b: int) -> float:
        ms = ctypes.c_float()
        self.check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), self.events[a], self.events[b]))
        return float(ms.value)

    def synchronize(self, i: int) -> None:
        self.check(self.lib.cudaEventSynchronize(self.events[i]))

    def close(self) -> None:
        for ev in self.events:
            self.lib.cudaEventDestroy(ev)


@dataclass
class TrtWorkload:
    """An engine's context run by hand on Polygraphy's device buffers, timed with events
    (TensorRT 8.5+ tensor API: set_input_shape, set_tensor_address, execute_async_v3)."""

    engine: Path
    label: str
    batch: int
    imgsz: tuple[int, int]
    precision: str = "engine"
    backend: str = "trt"
    device: str = ""
    _state: dict[str, Any] = field(default_factory=dict)

    def setup(self) -> None:
        from attn_deploy.engines.trt import TrtRunner, gpu_info

        runner = TrtRunner(self.engine)
        runner.activate()
        state: dict[str, Any] = {"runner": runner, "bufs": {}}
        try:
            self._bind(runner, state)
        except BaseException:
            self._state = state
            self.close()
            raise
        self._state = state
        gpu = gpu_info()
        self.device = gpu.name if gpu else "GPU"

    def _bind(self, runner: Any, s: dict[str, Any]) -> None:
        """Device buffers for every I/O tensor, their addresses set on the context."""
        from polygraphy import cuda

        ctx = runner._runner.context
        spec = runner.inputs()[0]
        self.batch = spec.fixed(0) or self.batch  # a static engine's own geometry, as for an ONNX
        self.imgsz = (spec.fixed(2) or self.imgsz[0], spec.fixed(3) or self.imgsz[1])
        name = spec.name
        host_in = _images(self.batch, self.imgsz).astype(_np_dtype(ctx.engine.get_tensor_dtype(name)))
        if not ctx.set_input_shape(name, host_in.shape):
            raise UserError(f"{self.engine}: TensorRT refuses input shape {'x'.join(map(str, host_in.shape))} "
                            "(outside the engine's profile?)")
        s.update(ctx=ctx, input=name, hosts={})
        s["stream"] = cuda.Stream()
        s["events"] = _Events(4)
        for out in [name, *runner.output_names()]:
            shape = tuple(ctx.get_tensor_shape(out))
            if any(d < 0 for d in shape):
                raise UserError(f"{self.engine}: output {out} has a data-dependent shape {shape}: bench times "
                                "engines without NMS (export without --nms)")
            dtype = _np_dtype(ctx.engine.get_tensor_dtype(out))
            s["bufs"][out] = cuda.DeviceArray(shape, dtype)
            s["hosts"][out] = host_in if out == name else np.empty(shape, dtype)
            ctx.set_tensor_address(out, s["bufs"][out].ptr)

    def step(self) -> Timing:
        s = self._state
        ev, sp = s["events"], s["stream"].ptr
        ev.record(0, sp)
        s["bufs"][s["input"]].copy_from(s["hosts"][s["input"]], s["stream"])
        ev.record(1, sp)
        if not s["ctx"].execute_async_v3(sp):
            raise UserError(f"{self.engine}: TensorRT's execute_async_v3 failed (its log above says why)")
        ev.record(2, sp)
        for name, buf in s["bufs"].items():
            if name != s["input"]:
                buf.copy_to(s["hosts"][name], s["stream"])
        ev.record(3, sp)
        ev.synchronize(3)
        return Timing(ev.elapsed(0, 3), ev.elapsed(0, 1), ev.elapsed(1, 2), ev.elapsed(2, 3))

    def close(self) -> None:
        s, self._state = self._state, {}
        if not s:
            return
        if "events" in s:
            s["events"].close()
        for buf in s["bufs"].values():
            buf.free()
        if "stream" in s:
            s["stream"].free()
        s["runner"].deactivate()


def _np_dtype(trt_dtype: Any) -> Any:
    import tensorrt as trt

    return trt.nptype(trt_dtype)


BACKENDS = ("torch", "ort", "trt")


def split_spec(text: str) -> tuple[str, str | None, str | None]:
    """'TARGET[@BACKEND[:PRECISION]]' -> (target, backend, precision)."""
    target, _, rest = text.partition("@")
    backend, _, precision = rest.partition(":")
    return target, backend or None, precision or None


def workload_for(target: str, backend: str | None, precision: str | None, batch: int,
                 imgsz: tuple[int, int] | None, cuda_graph: bool = False,
                 to_onnx: Callable[[Any, int, tuple[int, int]], bytes] | None = None) -> Any:
    """A workload for a model name or .pt (torch, or ort through ``to_onnx(model, batch, imgsz)``,
    an in-memory export the caller brings: engines sit below the exporter), an ONNX file (ort)
    or an engine (trt)."""
    from attn_deploy.engines import ENGINE_SUFFIXES, ONNX_SUFFIXES

    if backend is not None and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    if batch < 1:
        raise UserError("--batch must be at least 1")
    suffix, label = Path(target).suffix.lower(), target + (f"@{backend}" if backend else "") + (f":{precision}" if precision else "")
    if suffix in ENGINE_SUFFIXES:
        _only(backend, "trt", target, "an engine runs on TensorRT")
        if not Path(target).is_file():
            raise UserError(f"engine not found: {target}")
        return TrtWorkload(Path(target), label, batch, imgsz or (640, 640))
    if suffix in ONNX_SUFFIXES:
        _only(backend, "ort", target, "build an engine first ('attn-deploy build') to time it on TensorRT")
        batch, imgsz = _onnx_geometry(Path(target), batch, imgsz)
        return OrtWorkload(Path(target), label, batch, imgsz, precision or "fp32")
    return _model_workload(target, backend or "torch", precision or "fp32", batch, imgsz or (640, 640), cuda_graph,
                           label, to_onnx)


def _only(backend: str | None, allowed: str, target: str, why: str) -> None:
    if backend not in (None, allowed):
        raise UserError(f"{target}: backend {backend} does not apply ({why})")


def _model_workload(target: str, backend: str, precision: str, batch: int, imgsz: tuple[int, int],
                    cuda_graph: bool, label: str, to_onnx: Callable[[Any, int, tuple[int, int]], bytes] | None) -> Any:
    from attn_deploy.models import load_model

    net = load_model(weights=target) if target.endswith(".pt") else load_model(model=target)
    if backend == "torch":
        return TorchWorkload(net, label, batch, imgsz, precision, torch.cuda.is_available(), cuda_graph)
    if backend == "ort":
        if to_onnx is None:
            raise UserError(f"{target}@ort: export it first ('attn-deploy export'), then time the ONNX file")
        return OrtWorkload(to_onnx(net, batch, imgsz), label, batch, imgsz, precision)
    raise UserError(f"{target}: TensorRT times engines: 'attn-deploy export' then 'attn-deploy build' first")


def _onnx_geometry(path: Path, batch: int, imgsz: tuple[int, int] | None) -> tuple[int, tuple[int, int]]:
    """Batch and size fixed by a static ONNX input (a differing request is an error)."""
    from attn_deploy.engines.onnxrt import OnnxrtRunner
    from attn_deploy.onnxfile import read_onnx

    read_onnx(path)  # missing, empty or broken: one line here, not ONNX Runtime's paragraph
    specs = OnnxrtRunner(path).inputs()
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise UserError(f"{path} should have one NCHW image input, it has {[(s.name, s.shape) for s in specs][:3]}")
    spec = specs[0]
    fixed_b, fixed = spec.fixed(0), (spec.fixed(2), spec.fixed(3))
    if fixed_b is not None and batch not in (1, fixed_b):
        raise UserError(f"{path} has a fixed batch of {fixed_b}; export with --batch {batch} or --dynamic")
    if None not in fixed and imgsz is not None and tuple(imgsz) != fixed:
        raise UserError(f"{path} is fixed at {fixed[0]},{fixed[1]}; --imgsz {imgsz[0]},{imgsz[1]} does not apply")
    size = fixed if None not in fixed else (imgsz or (640, 640))
    return fixed_b or batch, (int(size[0]), int(size[1]))
