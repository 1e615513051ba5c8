"""TensorRT's calibration cache as ``build`` reads it (implicit INT8, TensorRT 8.x-10.x).

The cache is text: a header line ``TRT-<version>-<Algorithm>``, then ``tensor: scale`` lines,
each scale a big-endian float32 in hex. ``calib --cache`` writes it (``calib/cache.py``);
this module reads it and hands it to TensorRT through Polygraphy's ``Calibrator``. It lives
in engines, below calib, so that a backend never imports calib.

TensorRT skips a cache whose header names another TensorRT version or another algorithm and
then calibrates from the data loader, which here is empty: the build would fail with an
obscure "no data" error. So the header is rewritten, in memory, for the TensorRT that builds:
the scales themselves do not depend on the version.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any

from attn_deploy.errors import UserError

ALGORITHM = "EntropyCalibration2"  # Polygraphy's default base class, IInt8EntropyCalibrator2
HEADER = f"TRT-8601-{ALGORITHM}"  # what TensorRT 8.6.1 writes; rewritten for the TensorRT that builds


def cache_header(trt_version: str) -> str:
    """The header TensorRT ``trt_version`` writes: its version as an integer, which is
    major*1000 + minor*100 + patch up to 8.x ("8601") and major*10000 + minor*100 + patch
    from 10.0 (``NV_TENSORRT_VERSION`` in NvInferVersion.h: "100300" for 10.3.0)."""
    parts = [int(p) for p in (trt_version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    number = major * (10000 if major >= 10 else 1000) + minor * 100 + patch
    return f"TRT-{number}-{ALGORITHM}"


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """The header and the scales of a cache; a malformed one is a user error."""
    text = Path(path).read_text(errors="replace").splitlines()
    if not text or not text[0].startswith("TRT-"):
        raise UserError(f"{path} is not a TensorRT calibration cache (its first line should start with TRT-)")
    scales = {}
    for n, line in enumerate(text[1:], 2):
        name, sep, hexval = line.rpartition(": ")
        if not sep:
            raise UserError(f"{path}:{n}: not 'tensor: hex scale'")
        try:
            scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
        except (ValueError, struct.error):
            raise UserError(f"{path}:{n}: not 'tensor: hex scale'") from None
    return text[0], scales


def cache_for(path: str | Path, trt_version: str) -> bytes:
    """The cache's bytes with the header of ``trt_version`` (checked by ``read_cache`` first)."""
    read_cache(path)
    lines = Path(path).read_text(errors="replace").splitlines()
    return ("\n".join([cache_header(trt_version), *lines[1:]]) + "\n").encode()


def trt_calibrator(cache: str | Path, trt_version: str) -> Any:
    """Polygraphy's ``Calibrator`` reading ``cache``: with a valid cache TensorRT takes the
    ranges from it and never asks for a batch, so the data loader is empty. The cache goes
    in as an anonymous temporary file holding the rewritten header, so the user's file is
    never rewritten by TensorRT. (Not a BytesIO: Polygraphy sizes a file-like cache with
    ``os.stat(f.fileno())``, which a BytesIO cannot answer.)"""
    from polygraphy.backend.trt import Calibrator

    held = tempfile.TemporaryFile("w+b")  # noqa: SIM115 - lives as long as the calibrator
    held.write(cache_for(cache, trt_version))
    held.flush()
    held.seek(0)
    return Calibrator([], cache=held)
