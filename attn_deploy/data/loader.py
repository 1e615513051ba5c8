"""Batches of letterboxed images, with what is needed to map detections back.

Images are read with OpenCV (BGR), letterboxed, turned to RGB, CHW, float32 in [0, 1]: what
YOLOv5's ``detect.py`` feeds a model. An image that cannot be read, or whose labels are
malformed, is reported by name; ``on_error="skip"`` leaves it out and goes on,
``"fail"`` stops the run with that one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attn_deploy.data.letterbox import Letterbox, letterbox
from attn_deploy.data.source import BadSample, DataSource, Sample
from attn_deploy.errors import UserError

ON_ERROR = ("skip", "fail")


@dataclass
class Batch:
    images: np.ndarray  # (N, 3, H, W) float32 RGB in [0, 1]
    samples: list[Sample]
    placements: list[Letterbox]
    labels: list[np.ndarray]  # per image (n, 5): class, xywh normalised to the original image

    def __len__(self) -> int:
        return len(self.samples)

    def padded(self, size: int) -> np.ndarray:
        """The images, filled up with grey frames to ``size`` (a fixed-batch model's input)."""
        missing = size - len(self)
        if missing <= 0:
            return self.images
        grey = np.full((missing, *self.images.shape[1:]), 114 / 255, np.float32)
        return np.concatenate((self.images, grey))


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 BGR; BadSample when the file is missing, empty or not a decodable image."""
    import cv2

    try:
        raw = np.fromfile(path, np.uint8)  # imdecode, unlike imread, takes any path
    except OSError as e:
        raise BadSample(f"{path}: cannot read ({e.strerror})") from None
    image = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if image is None or image.size == 0:
        raise BadSample(f"{path}: not a decodable image")
    return image


def to_input(image: np.ndarray) -> np.ndarray:
    """A letterboxed BGR HxWx3 uint8 image -> RGB 3xHxW float32 in [0, 1]."""
    return np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / 255


@dataclass
class ImageLoader:
    """Iterates a DataSource in batches; ``skipped`` lists what was left out, and why."""

    source: DataSource
    imgsz: tuple[int, int]
    batch_size: int = 1
    on_error: str = "skip"
    max_images: int | None = None
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise UserError(f"on_error must be one of {ON_ERROR}, not {self.on_error!r}")
        if self.batch_size < 1:
            raise UserError("the batch size must be at least 1")

    def __len__(self) -> int:
        return len(self.source) if self.max_images is None else min(len(self.source), self.max_images)

    def __iter__(self) -> Iterator[Batch]:
        """The batches; a user error, once every image was tried, when none was usable: a
        check that compared nothing must never pass."""
        self.skipped = []
        pending: list[tuple[Sample, np.ndarray, Letterbox, np.ndarray]] = []
        used = 0
        for sample in self.source.samples[: len(self)]:
            item = self._load(sample)
            if item is not None:
                pending.append(item)
                used += 1
            if len(pending) == self.batch_size:
                yield self._batch(pending)
                pending = []
        if pending:
            yield self._batch(pending)
        if not used:
            first = f" (first: {self.skipped[0]})" if self.skipped else ""
            raise UserError(f"no usable image in {self.source.origin}: all {len(self)} were unreadable or badly labelled{first}")

    def _load(self, sample: Sample) -> tuple[Sample, np.ndarray, Letterbox, np.ndarray] | None:
        try:
            labels = sample.read_labels()
            names = self.source.names
            if names is not None and len(labels) and labels[:, 0].max() >= len(names):
                raise BadSample(f"{sample.label}: class {int(labels[:, 0].max())} but only {len(names)} names")
            image, placed = letterbox(read_image(sample.image), self.imgsz)
        except BadSample as e:
            if self.on_error == "fail":
                raise UserError(str(e), "pass --on-error skip to leave such files out") from None
            self.skipped.append(str(e))
            return None
        return sample, to_input(image), placed, labels

    @staticmethod
    def _batch(items: list[tuple[Sample, np.ndarray, Letterbox, np.ndarray]]) -> Batch:
        samples, images, placements, labels = zip(*items)
        return Batch(np.stack(images), list(samples), list(placements), list(labels))
