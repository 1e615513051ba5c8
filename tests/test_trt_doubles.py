"""Our TensorRT code paths on the CPU, through test doubles: every Polygraphy loader, runner
and CUDA wrapper we call is replaced by a recorder that binds the call against the installed
Polygraphy's own signature (so a wrong keyword fails here, not on the first GPU), and the
TensorRT objects we touch accept only method names Polygraphy's TensorRT backend itself calls.
A fake ``tensorrt`` module carries the few attributes our code reads; Polygraphy's real
``Calibrator`` runs on it. The real builds stay in the ``needs_trt`` tests."""

from __future__ import annotations

import importlib.machinery
import inspect
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import polygraphy
import polygraphy.backend.trt as pg_trt
import pytest
from onnx import TensorProto, helper
from polygraphy import cuda as pg_cuda
from polygraphy.backend.trt import calibrator as pg_calibrator
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType

from attn_deploy.engines.build import BuildOptions, Plan, _build, build_engine
from attn_deploy.engines.calibrator import HEADER, cache_header, read_cache
from attn_deploy.engines.trt import TrtRunner
from attn_deploy.errors import UserError

VERSION = "10.15.1"
POLYGRAPHY_TRT = Path(polygraphy.__file__).parent / "backend" / "trt"
# every attribute Polygraphy's TensorRT backend reads from a TensorRT object
TRT_NAMES = {m for f in POLYGRAPHY_TRT.glob("*.py") for m in re.findall(r"\.([A-Za-z_]\w*)", f.read_text())}


def bind(real: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Fail like Python would if ``real`` were called so; **kwargs of a class's __init__ are
    bound against its base class (``CreateConfig`` passes them to ``_CreateConfigCommon``)."""
    bound = inspect.signature(real).bind(*args, **kwargs)
    var = [p.name for p in inspect.signature(real).parameters.values() if p.kind is p.VAR_KEYWORD]
    if var and inspect.isclass(real) and bound.arguments.get(var[0]):
        inspect.signature(real.__mro__[1]).bind(**bound.arguments[var[0]])


class Calls:
    """Stands in for Polygraphy classes: ``calls.fake(name, returns)`` records each call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self.mp = monkeypatch

    def fake(self, name: str, returns: Any = None, module: Any = pg_trt) -> None:
        real = getattr(module, name)

        def called(*args: Any, **kwargs: Any) -> Any:
            bind(real, args, kwargs)
            self.log.setdefault(name, []).append((args, kwargs))
            return returns(*args, **kwargs) if callable(returns) else (returns if returns is not None else (name, args))

        self.mp.setattr(module, name, called)

    def one(self, name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        (call,) = self.log[name]
        return call


class Strict:
    """A TensorRT object: only names Polygraphy's TensorRT backend uses, answered from ``values``."""

    def __init__(self, **values: Any) -> None:
        self.values, self.used = values, []

    def __getattr__(self, name: str) -> Any:
        assert name in TRT_NAMES, f"{name} is not a TensorRT attribute Polygraphy ever uses"
        self.used.append(name)
        return self.values[name]


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = VERSION
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="pool:workspace")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="io:input", OUTPUT="io:output")
    trt.nptype = lambda dtype: np.dtype(dtype)
    for base in ("IInt8EntropyCalibrator2", "IInt8LegacyCalibrator", "IInt8Calibrator"):
        setattr(trt, base, type(base, (), {}))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(pg_calibrator, "trt", trt)  # Polygraphy's lazy module, for Calibrator's base class
    return trt


def tiny_onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["images"], ["output0"])], "g", [x], [y])), path)
    return path


def test_build_passes_polygraphy_the_arguments_it_takes(fake_trt, monkeypatch, tmp_path: Path) -> None:
    calls = Calls(monkeypatch)
    for name in ("NetworkFromOnnxPath", "CreateConfig", "PostprocessConfig"):
        calls.fake(name)
    calls.fake("EngineBytesFromNetwork", lambda *a, **k: lambda: b"serialized engine")
    src, cache, timing = tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.cache", tmp_path / "timing.cache"
    cache.write_text(f"{HEADER}\nimages: 3c010a14\n")
    opts = BuildOptions("int8", workspace_gib=2, timing_cache=timing, dla_core=1, gpu_fallback=True, calib_cache=cache)
    result = build_engine(src, tmp_path / "m.engine", opts)

    assert calls.one("NetworkFromOnnxPath") == ((str(src),), {})  # float32 ONNX: not strongly typed
    _, cfg = calls.one("CreateConfig")
    assert cfg["int8"] and not cfg["fp16"] and cfg["profiles"] is None
    assert cfg["memory_pool_limits"] == {"pool:workspace": 2 * 2**30}
    assert cfg["load_timing_cache"] is None and cfg["use_dla"] and cfg["allow_gpu_fallback"]
    # Polygraphy's own Calibrator reads the cache with the header of the TensorRT that builds
    assert cfg["calibrator"].read_calibration_cache() == f"{cache_header(VERSION)}\nimages: 3c010a14\n".encode()
    assert cache_header(VERSION) == "TRT-101501-EntropyCalibration2" and cache_header("8.6.1") == HEADER
    (config, func), _ = calls.one("PostprocessConfig")
    builder_config = types.SimpleNamespace(DLA_core=0)
    func("builder", "network", builder_config)  # PostprocessConfig calls func(builder, network, config)
    assert builder_config.DLA_core == 1 and config == ("CreateConfig", ())
    (network, config2), kw = calls.one("EngineBytesFromNetwork")
    assert network[0] == "NetworkFromOnnxPath" and config2[0] == "PostprocessConfig" and kw == {"save_timing_cache": str(timing)}
    assert (tmp_path / "m.engine").read_bytes() == b"serialized engine"
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side == result.sidecar and side["tensorrt"] == VERSION and side["dla"] == {"core": 1, "gpu_fallback": True}
    assert side["calib_cache"]["path"] == str(cache.resolve()) and read_cache(cache)[0] == HEADER  # file untouched


def test_debug_engine_marks_outputs_strongly_typed(fake_trt, monkeypatch, tmp_path: Path) -> None:
    calls = Calls(monkeypatch)
    for name in ("NetworkFromOnnxPath", "ModifyNetworkOutputs", "CreateConfig"):
        calls.fake(name)
    calls.fake("EngineBytesFromNetwork", lambda *a, **k: lambda: bytearray(b"e"))
    src = tiny_onnx(tmp_path / "m.onnx")
    profile = ("images", ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)))
    assert _build(src, Plan(strongly_typed=True), profile, BuildOptions(), ["a", "output0"]) == b"e"
    assert calls.one("NetworkFromOnnxPath") == ((str(src),), {"strongly_typed": True})
    assert calls.one("ModifyNetworkOutputs")[1] == {"outputs": ["a", "output0"]}
    _, cfg = calls.one("CreateConfig")
    assert not cfg["fp16"] and not cfg["int8"] and cfg["calibrator"] is None and not cfg["use_dla"]
    (prof,) = cfg["profiles"]
    assert [tuple(s) for s in prof["images"]] == list(profile[1])


def test_build_failure_is_one_line(fake_trt, monkeypatch, tmp_path: Path) -> None:
    from polygraphy.exception import PolygraphyException

    def fails() -> None:
        raise PolygraphyException("Invalid Engine. Please ensure the engine was built correctly")

    calls = Calls(monkeypatch)
    calls.fake("NetworkFromOnnxPath")
    calls.fake("CreateConfig")
    calls.fake("EngineBytesFromNetwork", lambda *a, **k: fails)
    with pytest.raises(UserError, match="TensorRT could not build m.onnx: Invalid Engine"):
        build_engine(tiny_onnx(tmp_path / "m.onnx"), None, BuildOptions())
    assert not (tmp_path / "m.engine").exists()


class FakePolygraphyRunner:
    """Polygraphy's TrtRunner as far as we use it: it reuses one host buffer per output."""

    def __init__(self, engine: Any, **kwargs: Any) -> None:
        bind(pg_trt.TrtRunner, (engine,), kwargs)
        self.engine_loader, self.out, self.calls = engine, np.zeros((1, 3, 8, 8), np.float32), 0
        self.engine = Strict(num_io_tensors=2, get_tensor_dtype=lambda name: np.float32)
        self.context = Strict(engine=self.engine, set_input_shape=lambda name, shape: True,
                              get_tensor_shape=lambda name: (1, 3, 8, 8), set_tensor_address=lambda name, ptr: True,
                              execute_async_v3=lambda stream: True)

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass

    def get_input_metadata(self, *args: Any, **kwargs: Any) -> TensorMetadata:
        bind(pg_trt.TrtRunner.get_input_metadata, (self, *args), kwargs)
        assert kwargs.get("use_numpy_dtypes") is False  # the True form is deprecated (removed in 0.60)
        return TensorMetadata().add("images", DataType.FLOAT32, (1, 3, 8, 8))

    def infer(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        bind(pg_trt.TrtRunner.infer, (self, *args), kwargs)
        self.calls += 1
        self.out[...] = self.calls
        return {"output0": self.out}


@pytest.fixture
def fake_runner(fake_trt, monkeypatch) -> Calls:
    calls = Calls(monkeypatch)
    calls.fake("EngineFromBytes")
    monkeypatch.setattr(pg_trt, "TrtRunner", FakePolygraphyRunner)

    def metadata(*args: Any, **kwargs: Any) -> TensorMetadata:
        assert kwargs["mode"] == "io:output"
        return TensorMetadata().add("output0", DataType.FLOAT32, (1, 3, 8, 8))

    calls.fake("get_metadata_from_engine", metadata, module=pg_trt.util)
    return calls


def test_runner_reads_metadata_and_copies_reused_buffers(fake_runner: Calls, tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with TrtRunner(engine) as r:
        assert [(s.name, s.shape, s.dtype) for s in r.inputs()] == [("images", (1, 3, 8, 8), "float32")]
        assert r.output_names() == ["output0"]
        feed = {"images": np.zeros((1, 3, 8, 8), np.float32)}
        first, second = r.run(feed)["output0"], r.run(feed)["output0"]
    assert first.max() == 1 and second.max() == 2  # the first result survives the second run
    assert fake_runner.one("EngineFromBytes") == ((b"plan",), {})


def test_bench_workload_uses_the_tensor_api_and_cuda_wrappers(fake_runner: Calls, monkeypatch, tmp_path: Path) -> None:
    from attn_deploy.engines.workloads import TrtWorkload

    log: list[str] = []

    class Buffer:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            bind(pg_cuda.DeviceArray, args, kwargs)
            self.ptr = 4096

        def copy_from(self, *args: Any, **kwargs: Any) -> None:
            bind(pg_cuda.DeviceArray.copy_from, (self, *args), kwargs)
            log.append("h2d")

        def copy_to(self, *args: Any, **kwargs: Any) -> None:
            bind(pg_cuda.DeviceArray.copy_to, (self, *args), kwargs)
            log.append("d2h")

        def free(self) -> None:
            log.append("free")

    class Runtime:  # the CUDA runtime through ctypes: cudaEvent* return cudaSuccess (0)
        def __getattr__(self, name: str) -> Any:
            assert name in {"cudaEventCreate", "cudaEventRecord", "cudaEventElapsedTime", "cudaEventSynchronize",
                            "cudaEventDestroy"}, name
            return lambda *args: log.append(name) or 0

    wrapper = types.SimpleNamespace(handle=Runtime(), check=lambda status: None if status == 0 else pytest.fail("CUDA error"))
    monkeypatch.setattr(pg_cuda, "wrapper", lambda: wrapper)
    monkeypatch.setattr(pg_cuda, "Stream", lambda: types.SimpleNamespace(ptr=7, free=lambda: log.append("stream free")))
    monkeypatch.setattr(pg_cuda, "DeviceArray", Buffer)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    w = TrtWorkload(engine, "m.engine", batch=4, imgsz=(640, 640))
    w.setup()
    assert (w.batch, w.imgsz) == (1, (8, 8))  # a static engine's geometry, not the defaults
    t = w.step()
    assert t.total == 0.0 and log.count("h2d") == 1 and log.count("d2h") == 1
    w.close()
    assert log.count("free") == 2 and "stream free" in log and log.count("cudaEventDestroy") == 4
