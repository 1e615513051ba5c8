"""FP16 by Model Optimizer's AutoCast: float16 inside, float32 inputs and outputs kept.

AutoCast keeps in float32 the nodes whose activations on the calibration images exceed
``data_max`` (or whose initializers exceed float16's range), so overflow is found by
measurement on the images inference will see, not guessed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from attn_deploy.calib.int8 import quiet_modelopt, require_modelopt, seeded


def convert_fp16(src: Path, images: np.ndarray | None, exclude: list[str] | None = None,
                 data_max: float = 512.0) -> bytes:
    require_modelopt()
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory(prefix="attn-deploy-fp16-") as tmp:
        calib = None
        if images is not None:
            calib = str(Path(tmp) / "calib.npz")
            np.savez(calib, images=images)
        quiet_modelopt()
        with seeded():
            model = convert_to_mixed_precision(str(src), low_precision_type="fp16", nodes_to_exclude=exclude or None,
                                               data_max=data_max, keep_io_types=True, calibration_data=calib)
        return onnx.ModelProto.SerializeToString(model)
