"""A deterministic synthetic detection dataset: small shapes on busy backgrounds.

Every image is a function of (seed, split, index) alone, so any part of the set can be made
again, in any order, on any machine with the same OpenCV. Five classes of filled or outlined
shapes, most of them small (the seed article is about small objects), on gradients with
noise and blurred blobs that are not objects. Written in the YOLO layout::

    ROOT/data.yaml
    ROOT/images/{train,val}/000123.jpg
    ROOT/labels/{train,val}/000123.txt   # class x-centre y-centre width height, normalised

Run ``python -m attn_deploy.train.shapes ROOT`` (``--train N --val N`` to size it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

CLASSES = ("circle", "square", "triangle", "cross", "ring")
SPLIT_SEEDS = {"train": 1, "val": 2}


@dataclass(frozen=True)
class ShapesSpec:
    seed: int = 0
    min_side: int = 256  # image sides are drawn from [min_side, max_side]
    max_side: int = 416
    min_size: int = 10  # object sizes in pixels, log-uniform in [min_size, max_size]
    max_size: int = 72
    max_objects: int = 10


def make_image(spec: ShapesSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One BGR image and its (n, 5) labels: class, xywh normalised."""
    import cv2

    rng = np.random.default_rng([spec.seed, SPLIT_SEEDS[split], index])
    h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, 2))
    image = _background(rng, h, w)
    boxes: list[tuple[int, float, float, float, float]] = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        placed = _place(rng, spec, image, boxes)
        if placed is not None:
            boxes.append(placed)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    image = np.clip(image + rng.normal(0, rng.uniform(2, 10), image.shape), 0, 255).astype(np.uint8)
    labels = np.array([[c, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
                       for c, x0, y0, x1, y1 in boxes], np.float32).reshape(-1, 5)
    return image, labels


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A two-colour gradient at a random angle, with soft blobs that are not objects."""
    import cv2

    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    image = a + (b - a) * t[..., None]
    for _ in range(int(rng.integers(0, 5))):
        blob = np.zeros((h, w), np.float32)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(10, w // 3)), int(rng.integers(10, h // 3)))
        cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), float(rng.uniform(8, 20)))[..., None]
        image = image * (1 - blob) + rng.uniform(0, 255, 3) * blob
    return image.astype(np.float32)


def _place(rng: np.random.Generator, spec: ShapesSpec, image: np.ndarray,
           boxes: list[tuple[int, float, float, float, float]]) -> tuple[int, float, float, float, float] | None:
    """Draw one shape where it overlaps no other; its class and tight box, or None."""
    h, w = image.shape[:2]
    size = float(np.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))))
    cls = int(rng.integers(0, len(CLASSES)))
    for _ in range(20):
        cx, cy = rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2)
        pts = _outline(CLASSES[cls], cx, cy, size, float(rng.uniform(0, 2 * math.pi)))
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            continue
        if all(x1 + 2 < b[1] or b[3] + 2 < x0 or y1 + 2 < b[2] or b[4] + 2 < y0 for b in boxes):
            _draw(rng, image, CLASSES[cls], pts, size)
            return cls, float(x0), float(y0), float(x1), float(y1)
    return None


def _outline(kind: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """The shape's outline points (k, 2) in pixels; circles and rings as polygons too."""
    r = size / 2
    if kind in ("circle", "ring"):
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        return np.stack((cx + r * np.cos(t), cy + r * np.sin(t)), 1)
    if kind == "square":
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r / math.sqrt(2)
    elif kind == "triangle":
        t = np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) - math.pi / 2
        local = np.stack((np.cos(t), np.sin(t)), 1) * r
    else:  # cross: a plus sign, arms a third of its size wide
        a, b = r, r / 3
        local = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                          [-b, b], [-a, b], [-a, -b], [-b, -b]])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return local @ rot.T + (cx, cy)


def _draw(rng: np.random.Generator, image: np.ndarray, kind: str, pts: np.ndarray, size: float) -> None:
    import cv2

    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    under = image[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1].reshape(-1, 3).mean(0)
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):  # a colour that stands out from what lies under the shape
        if np.abs(colour - under).max() > 80:
            break
        colour = rng.uniform(0, 255, 3)
    poly = [np.round(pts * 16).astype(np.int32)]  # 4 fractional bits: sub-pixel outlines
    if kind == "ring":
        thickness = max(2, int(round(size / 6)))
        # the stroke is centred on the outline: draw it inside so the box stays tight
        inner = (pts - pts.mean(0)) * (1 - thickness / size) + pts.mean(0)
        cv2.polylines(image, [np.round(inner * 16).astype(np.int32)], True, colour.tolist(), thickness, cv2.LINE_AA, 4)
    else:
        cv2.fillPoly(image, poly, colour.tolist(), cv2.LINE_AA, 4)


def write_dataset(root: str | Path, train: int = 3000, val: int = 300, spec: ShapesSpec = ShapesSpec()) -> Path:
    """Write the dataset under ``root`` (images, labels, data.yaml); returns the data.yaml."""
    import cv2

    root = Path(root)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, labels = make_image(spec, split, i)
            cv2.imwrite(str(root / "images" / split / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            lines = [f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}" for c, x, y, bw, bh in labels]
            (root / "labels" / split / f"{i:06d}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    doc = {"path": ".", "train": "images/train", "val": "images/val", "nc": len(CLASSES),
           "names": list(CLASSES), "generator": {"seed": spec.seed, "train": train, "val": val}}
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def dataset_cli(argv: list[str] | None, module: str, doc: str, classes: tuple[str, ...],
                write: Callable[[Path, int, int, int], Path]) -> None:
    """``python -m MODULE ROOT [--train N] [--val N] [--seed S]`` for a synthetic dataset:
    ``write(root, train, val, seed)`` returns its data.yaml (shapes here, scenes beside it)."""
    import click

    @click.command(help=doc)
    @click.argument("root", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--train", "n_train", type=click.IntRange(0), default=3000, show_default=True, help="Training images.")
    @click.option("--val", "n_val", type=click.IntRange(1), default=300, show_default=True, help="Validation images.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Makes a different set.")
    def cli(root: Path, n_train: int, n_val: int, seed: int) -> None:
        out = write(root, n_train, n_val, seed)
        click.echo(f"{out}: {n_train} train, {n_val} val images, {len(classes)} classes: {', '.join(classes)}")

    cli.main(args=argv, prog_name=f"python -m {module}")


def main(argv: list[str] | None = None) -> None:
    dataset_cli(argv, "attn_deploy.train.shapes", "Write the synthetic shapes dataset under ROOT (ROOT/data.yaml).",
                CLASSES, lambda root, train, val, seed: write_dataset(root, train, val, ShapesSpec(seed=seed)))


if __name__ == "__main__":
    main()
