"""INT8 Q/DQ by NVIDIA Model Optimizer's ONNX post-training quantization.

Model Optimizer places Q/DQ pairs where TensorRT fuses them (convolution inputs and weights,
residual adds, concats, pools); we decide which nodes stay out (``exclude``) or which alone
go in (``only``), feed it our letterboxed calibration images, and read back its file. Its own
activation ranges are ``max`` and ``entropy``; ``mse`` and ``percentile`` are ours
(``ranges.py``): its ``max`` graph with each activation's scale chosen from a histogram, the
scales it ties (a Concat's, SPPF's MaxPools') still tied.
Excluded nodes run in ``high_precision`` (float16 by default: what TensorRT runs fastest
beside INT8; float32 on request).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from attn_deploy.errors import UserError

METHODS = {"entropy": "entropy", "max": "max"}  # Model Optimizer's own calibration
OURS = ("mse", "percentile")  # ranges.py: Model Optimizer's max graph, each activation's range by histogram
MIN_ORT = (1, 30)


def require_modelopt() -> None:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError as e:
        raise UserError(f"NVIDIA Model Optimizer's ONNX quantization is not importable ({e})",
                        "pip install nvidia-modelopt==0.47.* onnx-graphsurgeon onnxconverter-common") from None


def require_ort_for_int8() -> str:
    """INT8 accuracy is only reported from ONNX Runtime >= 1.30: earlier releases truncate in
    QuantizeLinear on float16 input (DESIGN.md), which wrecks Model Optimizer's graphs."""
    import onnxruntime

    version = onnxruntime.__version__
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_ORT:
        raise UserError(f"ONNX Runtime {version} rounds QuantizeLinear wrongly on float16 input; "
                        "INT8 accuracy measured with it would be false", "pip install 'onnxruntime>=1.30'")
    return version


def quantize_int8(src: Path, images: np.ndarray, method: str, exclude: list[str] | None = None,
                  only: list[str] | None = None, high_precision: str = "fp16") -> bytes:
    """The Q/DQ ONNX as bytes (Model Optimizer writes a file; it lives in a temporary folder)."""
    if method in OURS:
        from attn_deploy.calib.ranges import rescaled

        naive = quantize_int8(src, images, "max", exclude, only, high_precision)
        return rescaled(onnx.load(str(src)), onnx.load_from_string(naive), images, method).SerializeToString()
    if method not in METHODS:
        raise UserError(f"--method {method}: INT8 calibrates with {', '.join([*METHODS, *OURS])}")
    require_modelopt()
    from modelopt.onnx.quantization import quantize

    with tempfile.TemporaryDirectory(prefix="attn-deploy-q-") as tmp:
        out, copy = Path(tmp) / "q.onnx", Path(tmp) / "src.onnx"
        shutil.copyfile(src, copy)  # Model Optimizer rewrites its input file in place: never the user's
        quiet_modelopt()
        # ONNX Runtime's calibrator prints its histogram sizes, and entropy draws tqdm bars on stderr
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), seeded():
            quantize(str(copy), quantize_mode="int8", calibration_data={"images": images},
                     calibration_method=METHODS[method], calibration_eps=["cpu"], output_path=str(out),
                     nodes_to_exclude=exclude or None, nodes_to_quantize=only or None,
                     high_precision_dtype=high_precision, log_level="ERROR")
        if not out.is_file():
            raise UserError(f"Model Optimizer wrote no model for {src.name}")
        return out.read_bytes()


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """numpy's global generator seeded for the block, and put back after: Model Optimizer draws
    random inputs from it (its utilities' ``np.random``) where calibration data does not reach,
    and an unseeded draw let two runs of one calib write different graphs."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def quiet_modelopt() -> None:
    """Model Optimizer logs every step at INFO on stderr, and its ONNX Runtime sessions warn
    about constant folding; keep errors only."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    for name in ["modelopt", *logging.root.manager.loggerDict]:
        if name.startswith("modelopt"):
            logging.getLogger(name).setLevel(logging.ERROR)
