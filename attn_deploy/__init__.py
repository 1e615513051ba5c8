"""attn-deploy: ship attention-augmented YOLOv5 detectors to NVIDIA GPUs, with proof."""

from __future__ import annotations

__version__ = "0.1.0"
