"""The anchor-free architectures as data: YOLOv8, YOLO11, YOLO12 and YOLO26 (P3-P5 detection).

Each family is one definition with five scales (depth, width, max_channels), the published
configurations of each release. Rows are ``[from, repeats, module, args]``; the parser applies
the scaling. Their names (``yolov8n``, ``yolo11s-cbam``, ...) are the zoo's (``models/zoo.py``).
"""

from __future__ import annotations

from typing import Any

_UP = [-1, 1, "nn.Upsample", [None, 2, "nearest"]]


def _stem(mid: list[list[Any]]) -> list[list[Any]]:
    """The strided convs P1-P5 with ``mid`` blocks after P2, P3, P4 and P5 (in that order)."""
    rows: list[list[Any]] = []
    for c, block in zip((128, 256, 512, 1024), mid):
        rows += [[-1, 1, "Conv", [c, 3, 2]], block]
    return [[-1, 1, "Conv", [64, 3, 2]], *rows]


def _neck(blocks: list[list[Any]], p4: int, p3: int, h4: int, h5: int, last: int) -> list[list[Any]]:
    """The PAN neck: up to P3 and back down to P5; ``blocks`` are its four fusion rows."""
    b13, b16, b19, b22 = blocks
    return [
        _UP, [[-1, p4], 1, "Concat", [1]], b13,
        _UP, [[-1, p3], 1, "Concat", [1]], b16,
        [-1, 1, "Conv", [256, 3, 2]], [[-1, h4], 1, "Concat", [1]], b19,
        [-1, 1, "Conv", [512, 3, 2]], [[-1, h5], 1, "Concat", [1]], b22,
        [[last, last + 3, last + 6], 1, "Detect", ["nc"]],
    ]


YOLOV8: dict[str, Any] = {
    "nc": 80,
    "scales": {"n": [0.33, 0.25, 1024], "s": [0.33, 0.50, 1024], "m": [0.67, 0.75, 768],
               "l": [1.00, 1.00, 512], "x": [1.00, 1.25, 512]},
    "backbone": _stem([[-1, 3, "C2f", [128, True]], [-1, 6, "C2f", [256, True]],
                       [-1, 6, "C2f", [512, True]], [-1, 3, "C2f", [1024, True]]])
    + [[-1, 1, "SPPF", [1024, 5]]],
    "head": _neck([[-1, 3, "C2f", [512]], [-1, 3, "C2f", [256]], [-1, 3, "C2f", [512]], [-1, 3, "C2f", [1024]]],
                  p4=6, p3=4, h4=12, h5=9, last=15),
}

_SCALES_11 = {"n": [0.50, 0.25, 1024], "s": [0.50, 0.50, 1024], "m": [0.50, 1.00, 512],
              "l": [1.00, 1.00, 512], "x": [1.00, 1.50, 512]}
_STEM_11 = _stem([[-1, 2, "C3k2", [256, False, 0.25]], [-1, 2, "C3k2", [512, False, 0.25]],
                  [-1, 2, "C3k2", [512, True]], [-1, 2, "C3k2", [1024, True]]])

YOLO11: dict[str, Any] = {
    "nc": 80,
    "scales": _SCALES_11,
    "backbone": _STEM_11 + [[-1, 1, "SPPF", [1024, 5]], [-1, 2, "C2PSA", [1024]]],
    "head": _neck([[-1, 2, "C3k2", [512, False]], [-1, 2, "C3k2", [256, False]],
                   [-1, 2, "C3k2", [512, False]], [-1, 2, "C3k2", [1024, True]]],
                  p4=6, p3=4, h4=13, h5=10, last=16),
}

YOLO12: dict[str, Any] = {
    "nc": 80,
    "scales": _SCALES_11,
    "backbone": _stem([[-1, 2, "C3k2", [256, False, 0.25]], [-1, 2, "C3k2", [512, False, 0.25]],
                       [-1, 4, "A2C2f", [512, True, 4]], [-1, 4, "A2C2f", [1024, True, 1]]]),
    "head": _neck([[-1, 2, "A2C2f", [512, False, -1]], [-1, 2, "A2C2f", [256, False, -1]],
                   [-1, 2, "A2C2f", [512, False, -1]], [-1, 2, "C3k2", [1024, True]]],
                  p4=6, p3=4, h4=11, h5=8, last=14),
}

YOLO26: dict[str, Any] = {
    "nc": 80,
    "end2end": True,
    "reg_max": 1,
    "scales": _SCALES_11,
    "backbone": _STEM_11 + [[-1, 1, "SPPF", [1024, 5, 3, True]], [-1, 2, "C2PSA", [1024]]],
    "head": _neck([[-1, 2, "C3k2", [512, True]], [-1, 2, "C3k2", [256, True]],
                   [-1, 2, "C3k2", [512, True]], [-1, 1, "C3k2", [1024, True, 0.5, True]]],
                  p4=6, p3=4, h4=13, h5=10, last=16),
}

FAMILIES: dict[str, dict[str, Any]] = {"yolov8": YOLOV8, "yolo11": YOLO11, "yolo12": YOLO12, "yolo26": YOLO26}
