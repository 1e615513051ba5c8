"""A harder synthetic detection dataset: many small, look-alike, overlapping objects in clutter.

The shapes set (``shapes.py``) is too easy to show what INT8 costs: five distinct classes,
no overlap, mAP50 0.99. Here 25 classes come in look-alike families (the same outline
filled solid, striped, dotted, checkered or left hollow; hexagon, octagon and circle;
square and diamond; 5- and 6-point stars), up to 30 per image, 8-80 px across, allowed to
hide each other by up to 45 %, among distractors of kinds that are no class (pentagons,
ellipses, 4-point stars, irregular polygons, grid and diagonal patches), over textured
backgrounds with lines and arcs in front of and behind the objects, under uneven light,
blur, noise and JPEG. Objects left less than half visible lose their label; boxes are the
whole outline clipped to the image, as COCO's are.

Every image is a function of (seed, split, index) alone; the layout is the shapes set's::

    ROOT/data.yaml
    ROOT/images/{train,val}/000123.jpg
    ROOT/labels/{train,val}/000123.txt   # class x-centre y-centre width height, normalised

Run ``python -m attn_deploy.train.scenes ROOT`` (``--train N --val N`` to size it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from attn_deploy.train.shapes import SPLIT_SEEDS, ShapesSpec, _background, _outline, dataset_cli

CLASSES = (
    "solid_circle", "solid_hexagon", "solid_octagon", "solid_square", "solid_diamond",
    "solid_rectangle", "solid_triangle", "solid_star5", "solid_star6", "solid_cross",
    "striped_circle", "striped_square", "striped_hexagon", "striped_triangle",
    "dotted_circle", "dotted_square", "dotted_triangle",
    "checker_circle", "checker_square", "checker_diamond",
    "hollow_circle", "hollow_square", "hollow_hexagon", "hollow_triangle", "hollow_star5",
)
DISTRACTOR_KINDS = ("pentagon", "ellipse", "star4", "blob", "patch")
DISTRACTOR_FILLS = ("solid", "hollow", "grid", "diagonal", "striped", "dotted")
_SIDES = {"pentagon": 5, "hexagon": 6, "octagon": 8}
_POINTS = {"star4": 4, "star5": 5, "star6": 6}


@dataclass(frozen=True)
class ScenesSpec(ShapesSpec):
    """The shapes set's sizes, larger and denser, and the clutter on top."""

    max_side: int = 480
    min_size: int = 8
    max_size: int = 80
    max_objects: int = 30
    max_distractors: int = 10
    max_strokes: int = 16  # lines and arcs, half behind the objects and half in front
    max_hidden: float = 0.45  # placement keeps each labelled object at least this visible
    min_visible: float = 0.5  # labels of objects less visible than this are dropped
    min_contrast: float = 60.0  # an object's colour differs this much from what lies under it


@dataclass
class _Item:
    cls: int  # -1 for a distractor
    box: tuple[float, float, float, float]  # the full outline's, clipped to the image
    area: int  # mask pixels inside the image when drawn
    visible: int


def make_image(spec: ScenesSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One BGR image and its (n, 5) labels: class, xywh normalised."""
    rng = np.random.default_rng([spec.seed, SPLIT_SEEDS[split], index, 7])
    h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, 2))
    image = _background(rng, h, w)
    _overlay_pattern(rng, image)
    owner = np.zeros((h, w), np.int16)  # 1 + item index of the visible object; 0 for the rest
    _strokes(rng, image, owner, int(rng.integers(0, spec.max_strokes // 2 + 1)))
    n_obj = int(rng.integers(1, spec.max_objects + 1))
    n_dis = int(rng.integers(0, spec.max_distractors + 1))
    order = rng.permutation(np.r_[rng.integers(0, len(CLASSES), n_obj), np.full(n_dis, -1)])
    items: list[_Item] = []
    for cls in order:
        _place(rng, spec, image, owner, items, int(cls))
    _strokes(rng, image, owner, int(rng.integers(0, spec.max_strokes // 2 + 1)))
    visible = np.bincount(owner.ravel(), minlength=len(items) + 1)[1:]
    image = _degrade(rng, image)
    labels = [[it.cls, (it.box[0] + it.box[2]) / 2 / w, (it.box[1] + it.box[3]) / 2 / h,
               (it.box[2] - it.box[0]) / w, (it.box[3] - it.box[1]) / h]
              for it, v in zip(items, visible) if it.cls >= 0 and v >= spec.min_visible * it.area]
    return image, np.array(labels, np.float32).reshape(-1, 5)


def _local(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A shape's outline (k, 2) at unit radius, centred on the origin, unrotated."""
    if kind in ("circle", "square", "triangle", "cross"):
        return _outline(kind, 0.0, 0.0, 2.0, 0.0)
    if kind == "diamond":
        return _outline("square", 0.0, 0.0, 2.0, math.pi / 4)
    if kind in _SIDES:
        return _ngon(np.ones(_SIDES[kind]))
    if kind in _POINTS:
        return _ngon(np.tile([1.0, 0.45], _POINTS[kind]))
    if kind in ("rectangle", "patch"):
        t = math.atan(1 / rng.uniform(1.6, 2.4))
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (math.cos(t), math.sin(t))
    if kind == "ellipse":
        return _outline("circle", 0.0, 0.0, 2.0, 0.0) * (1.0, 1 / rng.uniform(1.5, 2.5))
    return _ngon(rng.uniform(0.45, 1.0, int(rng.integers(5, 9))))  # blob: an irregular polygon


def _ngon(radii: np.ndarray) -> np.ndarray:
    t = np.arange(len(radii)) * 2 * math.pi / len(radii) - math.pi / 2
    return np.stack((radii * np.cos(t), radii * np.sin(t)), 1)


def _angle(rng: np.random.Generator, kind: str) -> float:
    """Squares stay near upright and diamonds near 45 degrees, or the two classes would be one."""
    if kind in ("square", "diamond"):
        return float(rng.uniform(-0.2, 0.2))
    return float(rng.uniform(0, 2 * math.pi))


def _place(rng: np.random.Generator, spec: ScenesSpec, image: np.ndarray, owner: np.ndarray,
           items: list[_Item], cls: int) -> None:
    """Draw one object (or distractor) where it hides no labelled object too much."""
    if cls >= 0:
        fill, kind = CLASSES[cls].split("_")
    else:
        kind, fill = DISTRACTOR_KINDS[rng.integers(len(DISTRACTOR_KINDS))], DISTRACTOR_FILLS[rng.integers(6)]
        fill = "grid" if kind == "patch" and fill in ("solid", "hollow") else fill
    h, w = owner.shape
    size = float(np.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))))
    local, angle = _local(kind, rng), _angle(rng, kind)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    for _ in range(10):
        # centres keep most of an object inside the image: cut-off parts do not count as hidden
        pts = local @ rot.T * size / 2 + rng.uniform((size / 4, size / 4), (w - size / 4, h - size / 4))
        alpha, (x0, y0) = _mask(pts, fill, size)
        ys, xs = slice(max(y0, 0), min(y0 + alpha.shape[0], h)), slice(max(x0, 0), min(x0 + alpha.shape[1], w))
        alpha = alpha[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        covers = alpha > 0.5
        area = int(covers.sum())
        if area == 0 or not _hides_little(spec, owner[ys, xs], covers, items):
            continue
        for j, n in enumerate(np.bincount(owner[ys, xs][covers], minlength=len(items) + 1)[1:]):
            items[j].visible -= int(n)
        _paint(rng, spec, image[ys, xs], alpha, fill, size, (ys.start - y0, xs.start - x0))
        owner[ys, xs][covers] = len(items) + 1
        box = (max(float(pts[:, 0].min()), 0.0), max(float(pts[:, 1].min()), 0.0),
               min(float(pts[:, 0].max()), w), min(float(pts[:, 1].max()), h))
        items.append(_Item(cls, box, area, area))
        return


def _hides_little(spec: ScenesSpec, under: np.ndarray, covers: np.ndarray, items: list[_Item]) -> bool:
    hidden = np.bincount(under[covers], minlength=len(items) + 1)[1:]
    return all(it.cls < 0 or it.visible - n >= (1 - spec.max_hidden) * it.area for it, n in zip(items, hidden) if n)


def _mask(pts: np.ndarray, fill: str, size: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The shape's coverage (antialiased, 0..1) over its whole box, and the box's corner."""
    import cv2

    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = pts - (x0, y0)
    if fill == "hollow":
        thickness = max(1, round(size / 7))
        # the stroke is centred on the line: draw it inside so the box stays tight
        inner = (local - local.mean(0)) * (1 - thickness / size) + local.mean(0)
        cv2.polylines(canvas, [np.round(inner * 16).astype(np.int32)], True, 255, thickness, cv2.LINE_AA, 4)
    else:
        cv2.fillPoly(canvas, [np.round(local * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 255, (int(x0), int(y0))


def _paint(rng: np.random.Generator, spec: ScenesSpec, region: np.ndarray, alpha: np.ndarray, fill: str,
           size: float, origin: tuple[int, int]) -> None:
    """Blend the filled texture into ``region`` (a view of the image) through ``alpha``."""
    under = region.reshape(-1, 3).mean(0)
    first = _colour(rng, under, spec.min_contrast)
    second = _colour(rng, first, 70.0)
    period = max(3.0, size / rng.uniform(3.5, 6.0))
    yy, xx = np.mgrid[0:alpha.shape[0], 0:alpha.shape[1]].astype(np.float32)
    yy, xx = yy + origin[0] + rng.uniform(0, period), xx + origin[1] + rng.uniform(0, period)
    pattern = _pattern(fill, yy % period / period, xx % period / period, (xx + yy) % period / period)
    texture = np.where(pattern[..., None], second, first)
    region[:] = region * (1 - alpha[..., None]) + texture * alpha[..., None]


def _pattern(fill: str, fy: np.ndarray, fx: np.ndarray, fd: np.ndarray) -> np.ndarray:
    """Where the second colour shows, from the phases (0..1) across rows, columns, diagonals."""
    if fill == "striped":
        return fy < 0.5
    if fill == "dotted":
        return (fy - 0.5) ** 2 + (fx - 0.5) ** 2 < 0.09
    if fill == "checker":
        return (fy < 0.5) ^ (fx < 0.5)
    if fill == "grid":
        return (fy < 0.25) | (fx < 0.25)
    if fill == "diagonal":
        return fd < 0.5
    return np.zeros(fy.shape, bool)  # solid and hollow: one colour


def _colour(rng: np.random.Generator, away_from: np.ndarray, contrast: float) -> np.ndarray:
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.abs(colour - away_from).max() > contrast:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def _overlay_pattern(rng: np.random.Generator, image: np.ndarray) -> None:
    """Faint stripes or a grid over part of the backgrounds, so texture alone is no cue."""
    if rng.random() > 0.4:
        return
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(4, 24)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) % period / period
    v = (yy * math.cos(angle) - xx * math.sin(angle)) % period / period
    mark = (u < 0.5) if rng.random() < 0.5 else ((u < 0.15) | (v < 0.15))
    image += (mark[..., None] * rng.uniform(-1, 1, 3) * rng.uniform(10, 50)).astype(np.float32)


def _strokes(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray, count: int) -> None:
    """Lines, arcs and polylines that are no object; in front of objects they hide what they cross."""
    import cv2

    h, w = owner.shape
    mask = np.zeros((h, w), np.uint8)
    for _ in range(count):
        colour, thickness = rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 4))
        if rng.random() < 0.5:
            pts = [np.round(rng.uniform((0, 0), (w, h), (int(rng.integers(2, 5)), 2))).astype(np.int32)]
            cv2.polylines(image, pts, False, colour, thickness, cv2.LINE_AA)
            cv2.polylines(mask, pts, False, 255, thickness)
        else:
            centre = tuple(int(v) for v in rng.uniform((0, 0), (w, h)))
            axes = tuple(int(v) for v in rng.uniform(5, max(w, h) / 3, 2))
            start = float(rng.uniform(0, 360))
            arc = (centre, axes, float(rng.uniform(0, 180)), start, start + float(rng.uniform(45, 270)))
            cv2.ellipse(image, *arc, colour, thickness, cv2.LINE_AA)
            cv2.ellipse(mask, *arc, 255, thickness)
    owner[mask > 0] = 0


def _degrade(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven light, contrast and brightness, sometimes blur, then noise and a JPEG round trip."""
    import cv2

    h, w = image.shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w, dtype=np.float32)[None] * math.cos(angle) + np.arange(h, dtype=np.float32)[:, None]
            * math.sin(angle)) / max(h, w)
    gain = rng.uniform(0.6, 1.3) * (1 + rng.uniform(-0.4, 0.4) * ramp)
    image = (image - 128) * gain[..., None] + 128 + rng.uniform(-40, 40)
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.3)))
    image = image + rng.standard_normal(image.shape, np.float32) * rng.uniform(2, 12)
    image = np.clip(image, 0, 255).astype(np.uint8)
    _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 91))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def write_dataset(root: str | Path, train: int = 3000, val: int = 300, spec: ScenesSpec = ScenesSpec()) -> Path:
    """Write the dataset under ``root`` (images, labels, data.yaml); returns the data.yaml."""
    import cv2

    root = Path(root)
    for split, count in (("train", train), ("val", val)):
        images, labels = root / "images" / split, root / "labels" / split
        for folder in (images, labels):
            folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, boxes = make_image(spec, split, i)
            cv2.imwrite(str(images / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            np.savetxt(labels / f"{i:06d}.txt", boxes, fmt=("%d", "%.6f", "%.6f", "%.6f", "%.6f"))
    generator = {"name": "scenes", "seed": spec.seed, "train": train, "val": val}
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "nc": len(CLASSES),
                                   "names": list(CLASSES), "generator": generator}, sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> None:
    dataset_cli(argv, "attn_deploy.train.scenes", "Write the cluttered-scenes dataset under ROOT (ROOT/data.yaml).",
                CLASSES, lambda root, train, val, seed: write_dataset(root, train, val, ScenesSpec(seed=seed)))


if __name__ == "__main__":
    main()
