"""The harder synthetic set: deterministic images, valid labels, a data.yaml the loader reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from attn_deploy.data import load_data
from attn_deploy.train.scenes import CLASSES, ScenesSpec, make_image, write_dataset

SMALL = ScenesSpec(seed=3, min_side=160, max_side=224)


def test_images_depend_on_seed_split_and_index_only() -> None:
    later_first = [make_image(SMALL, "train", i) for i in (5, 2)]
    image, labels = make_image(SMALL, "train", 2)
    assert np.array_equal(image, later_first[1][0]) and np.array_equal(labels, later_first[1][1])
    assert not np.array_equal(image, later_first[0][0])
    other = make_image(SMALL, "val", 2)[0]
    assert other.shape != image.shape or not np.array_equal(other, image)


def test_labels_are_valid_boxes_of_known_classes() -> None:
    assert len(CLASSES) >= 20 and len(set(CLASSES)) == len(CLASSES)
    counts = []
    for i in range(12):
        image, labels = make_image(ScenesSpec(), "val", i)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert labels.shape[1] == 5
        cls, xy, wh = labels[:, 0], labels[:, 1:3], labels[:, 3:]
        assert (cls == cls.round()).all() and (cls >= 0).all() and (cls < len(CLASSES)).all()
        assert (wh > 0).all() and (xy - wh / 2 >= -1e-5).all() and (xy + wh / 2 <= 1 + 1e-5).all()
        counts.append(len(labels))
    assert max(counts) >= 15  # crowded scenes, not a handful of objects


def test_written_dataset_loads(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "scenes", train=3, val=2, spec=SMALL)
    doc = yaml.safe_load(out.read_text())
    assert doc["nc"] == len(CLASSES) and doc["generator"]["name"] == "scenes"
    val = load_data(out, "val")
    assert len(val) == 2 and val.labelled and list(val.names or []) == list(CLASSES)
    assert len(load_data(out, "train")) == 3
    lines = (tmp_path / "scenes" / "labels" / "val" / "000000.txt").read_text().splitlines()
    expected = make_image(SMALL, "val", 0)[1]
    assert len(lines) == len(expected)
    assert np.allclose([[float(v) for v in ln.split()] for ln in lines], expected, atol=1e-5)


def test_the_scenes_demo_model_detects_on_held_out_scenes(tmp_path: Path) -> None:
    """demo/yolov5n-ca-scenes.pt reads through the safe loader with its 25 classes and its
    stored figures, and finds objects on val scenes written afresh (the first 32 of the 300)."""
    import torch

    from attn_deploy.models import load_model
    from attn_deploy.train.trainer import evaluate

    demo = Path(__file__).resolve().parent.parent / "demo" / "yolov5n-ca-scenes.pt"
    net = load_model(weights=demo)
    assert list(net.names) == list(CLASSES)
    stored = torch.load(demo, map_location="cpu", weights_only=True)["val"]
    assert 0.2 < stored["map50_95"] < stored["map50"] < 0.5  # harder than the shapes demos (0.83)
    data = write_dataset(tmp_path / "scenes", train=0, val=32)
    r = evaluate(net, data, 320)
    assert 0.1 < r.map50_95 < 0.5 and r.map50 > r.map50_95
