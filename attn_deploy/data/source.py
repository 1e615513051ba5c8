"""Where images (and their labels) come from: a folder, one image, or a YOLO ``data.yaml``.

A ``data.yaml`` is read as YOLOv5 reads it: ``path`` (the root; relative to the yaml's folder
here, where YOLOv5 resolves it against its own checkout), ``train``/``val``/``test`` each a
folder, a ``.txt`` list of images or a list of those, and ``names`` (a list or an
``{id: name}`` map). Labels sit beside the images with ``/images/`` replaced by ``/labels/``
and the suffix by ``.txt``; an image without a label file is a background image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy.errors import UserError
from attn_deploy.files import read_yaml

IMAGE_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})


class BadSample(Exception):
    """An image or label file that cannot be used; the loader skips or refuses it."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None = None  # None: an unlabelled source (a folder of images)

    def read_labels(self) -> np.ndarray:
        """(n, 5) float32: class, x-centre, y-centre, width, height, normalised to [0, 1]."""
        return read_labels(self.label) if self.label is not None else np.zeros((0, 5), np.float32)


@dataclass
class DataSource:
    samples: list[Sample]
    names: list[str] | None
    labelled: bool
    origin: str

    def __len__(self) -> int:
        return len(self.samples)


def load_data(path: str | Path, split: str = "val") -> DataSource:
    """Images from a ``data.yaml`` split, a folder (searched recursively) or one image."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"data not found: {p}")
    if p.suffix.lower() in (".yaml", ".yml"):
        return _from_yaml(p, split)
    images = _images_in(p)
    if not images:
        raise UserError(f"no images in {p} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return DataSource([Sample(i) for i in images], None, False, str(p))


def label_path(image: Path) -> Path:
    """YOLOv5's ``img2label_paths``: the last ``/images/`` becomes ``/labels/``, suffix ``.txt``."""
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    s = str(image)
    if a in s:
        s = b.join(s.rsplit(a, 1))
    return Path(s).with_suffix(".txt")


def read_labels(path: Path) -> np.ndarray:
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise BadSample(f"{path}:{n}: not numbers: {line.strip()!r}") from None
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
            raise BadSample(f"{path}:{n}: expected 'class x y w h' or a polygon, got {len(values)} values")
        rows.append(_row(values, path, n))
    return np.asarray(rows, np.float32).reshape(-1, 5)


def _row(values: list[float], path: Path, n: int) -> list[float]:
    cls, coords = values[0], np.asarray(values[1:])
    if len(coords) > 4:  # a segment polygon: its bounding box, as YOLOv5's segments2boxes
        xy = coords.reshape(-1, 2)
        lo, hi = xy.min(0), xy.max(0)
        coords = np.concatenate(((lo + hi) / 2, hi - lo))
    if cls < 0 or cls != int(cls):
        raise BadSample(f"{path}:{n}: class {values[0]} is not a non-negative integer")
    if (coords < 0).any() or (coords > 1.0 + 1e-6).any():
        raise BadSample(f"{path}:{n}: coordinates outside [0, 1] (labels must be normalised)")
    return [cls, *coords.tolist()]


def _images_in(p: Path) -> list[Path]:
    if p.is_file():
        return [p] if p.suffix.lower() in IMAGE_SUFFIXES else []
    return sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def _from_yaml(p: Path, split: str) -> DataSource:
    doc = read_yaml(p, "data yaml")
    if not isinstance(doc, dict) or split not in doc:
        raise UserError(f"{p}: no '{split}' entry (a YOLO data.yaml names its train/val image sets)")
    root = p.parent / str(doc.get("path") or "")
    images: list[Path] = []
    for entry in doc[split] if isinstance(doc[split], list) else [doc[split]]:
        images += _list_entry(root / str(entry), p)
    if not images:
        raise UserError(f"{p}: the '{split}' split holds no images")
    names = _names(doc.get("names"), p)
    return DataSource([Sample(i, label_path(i)) for i in images], names, True, f"{p} [{split}]")


def _list_entry(entry: Path, yaml_path: Path) -> list[Path]:
    if entry.suffix == ".txt" and entry.is_file():
        try:
            lines = [ln.strip() for ln in entry.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{yaml_path}: cannot read the image list {entry}") from e
        return [entry.parent / ln.removeprefix("./") if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    if not entry.exists():
        raise UserError(f"{yaml_path}: {entry} does not exist")
    return _images_in(entry)


def _names(names: Any, p: Path) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            raise UserError(f"{p}: 'names' keys must be class ids (0, 1, ...)")
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise UserError(f"{p}: 'names' must be a list or a {{id: name}} map")
