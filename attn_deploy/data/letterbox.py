"""YOLOv5's letterbox, to the pixel, and its inverse for boxes.

Resize keeping the aspect ratio (OpenCV, bilinear), pad with grey 114 to the target shape,
split the padding as YOLOv5 does (``round(d - 0.1)`` before, ``round(d + 0.1)`` after, with
Python's round-half-to-even). This is ``utils/augmentations.py:letterbox`` with
``auto=False``: the shape ``detect.py`` feeds an exported, fixed-shape model. (``val.py``
first shrinks with INTER_AREA and pads to a per-batch rectangle, which a fixed-shape engine
cannot take; we follow the deployment path.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GREY = (114, 114, 114)


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``shape`` (h, w) was placed into the network input: scale ``ratio``,
    then ``pad`` (dw, dh) pixels of grey on the left and on the top (YOLOv5's float pad)."""

    shape: tuple[int, int]
    ratio: float
    pad: tuple[float, float]


def letterbox(
    image: np.ndarray, new_shape: int | tuple[int, int], scaleup: bool = True, color: tuple[int, int, int] = GREY
) -> tuple[np.ndarray, Letterbox]:
    """An HxWx3 uint8 image letterboxed to ``new_shape`` (h, w), and how it was placed."""
    import cv2

    nh, nw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    h, w = image.shape[:2]
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    unpad_w, unpad_h = int(round(w * r)), int(round(h * r))
    dw, dh = (nw - unpad_w) / 2, (nh - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return image, Letterbox((h, w), r, (dw, dh))


def scale_boxes(boxes: np.ndarray, placed: Letterbox, clip: bool = True) -> np.ndarray:
    """xyxy boxes in network-input pixels -> pixels of the original image (YOLOv5's
    ``scale_boxes`` with the kept ratio and pad)."""
    out = np.array(boxes, dtype=np.float32, copy=True)
    out[..., [0, 2]] -= placed.pad[0]
    out[..., [1, 3]] -= placed.pad[1]
    out[..., :4] /= placed.ratio
    if clip:
        h, w = placed.shape
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
    return out
