"""Images and labels as every backend and the calibrator see them: one letterbox, one loader."""

from __future__ import annotations

from attn_deploy.data.letterbox import Letterbox, letterbox, scale_boxes
from attn_deploy.data.loader import Batch, ImageLoader
from attn_deploy.data.source import DataSource, Sample, load_data

__all__ = ["Batch", "DataSource", "ImageLoader", "Letterbox", "Sample", "letterbox", "load_data", "scale_boxes"]
