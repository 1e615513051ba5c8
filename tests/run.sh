#!/usr/bin/env bash
# The test command (the README's, and what CI runs: .ci/run calls this). From nothing, or over
# an earlier run: a .venv with torch (the CPU build named in the README), this package with its
# dev extras, the test-only references (ultralytics' own code, NVIDIA's tritonserver and the
# python backend's environment, Debian's Chromium where we are root), then the whole suite on
# every core. What cannot be installed here makes its tests skip, each saying what to install.
# Extra arguments go to pytest (e.g. tests/run.sh tests/test_ops.py).
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
# Debian's Chromium for the report tests (Playwright drives it; its own browser download is
# never used). Root only; apt runs beside the pip installs below.
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then
    ( export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q chromium >/dev/null 2>&1 \
          || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
          || echo "chromium could not be installed: the browser tests will skip" ) &
    apt_job=$!
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The python backend's execution environment for tests/test_serve.py: the same Python, numpy
# 1.26.4 (the stub fails on numpy 2), ONNX Runtime, OpenCV; built beside the main install.
( [ -x .venv-triton/bin/python ] || python3 -m venv .venv-triton
  .venv-triton/bin/pip install -q numpy==1.26.4 onnxruntime==1.32.0 "opencv-python-headless==4.11.*" "onnx~=1.21.0" pyyaml
) >"$log/triton-env" 2>&1 &
env_job=$!
pip install -q torch==2.13.0
pip install -q -e ".[dev]"
# The reference implementation for tests/test_ultralytics_checkpoints.py (test-only: the package
# never imports it). --no-deps because ultralytics' own requirements would replace torch with a
# multi-GB CUDA build; its light dependencies are named instead. torchvision only has to
# install: its compiled ops do not load beside our torch, and the tests never call them.
torch_before=$(python -c "import torch; print(torch.__version__)")
pip install -q --no-deps ultralytics==8.4.190 torchvision==0.28.0
pip install -q numpy pyyaml matplotlib opencv-python-headless pillow psutil requests scipy polars ultralytics-thop
torch_after=$(python -c "import torch; print(torch.__version__)")
[ "$torch_after" = "$torch_before" ] || { echo "the reference's install replaced torch $torch_before by $torch_after" >&2; exit 1; }
# Triton for tests/test_serve.py: the server binary from NVIDIA's pytriton wheel (--no-deps: its
# Python side wants numpy < 2 and is never imported; only the binary and its python backend are used).
pip install -q --no-deps nvidia-pytriton==0.7.0
wait "$env_job" || { cat "$log/triton-env" >&2; exit 1; }
.venv-triton/bin/pip install -q --no-deps -e .  # after the main install: both write this package's metadata
[ -z "${apt_job:-}" ] || wait "$apt_job" || true
python -m pytest -n auto --dist loadfile "$@"
