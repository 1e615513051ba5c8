"""Letterbox against hand-computed YOLOv5 placements; the loader's sources and bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from attn_deploy.data import ImageLoader, letterbox, load_data, scale_boxes
from attn_deploy.data.loader import to_input
from attn_deploy.data.source import label_path
from attn_deploy.errors import UserError

GREY = 114


def flat(h: int, w: int, bgr: tuple[int, int, int] = (10, 20, 30)) -> np.ndarray:
    return np.full((h, w, 3), bgr, np.uint8)


# (image h, w), target (h, w), scaleup -> ratio, resized (w, h), pad (dw, dh), (top, bottom, left, right)
# worked by hand from YOLOv5's formulas: r = min(th/h, tw/w); unpad = round(w r), round(h r);
# d = (t - unpad) / 2; before = round(d - 0.1), after = round(d + 0.1)
CASES = [
    ((375, 500), (320, 320), True, 0.64, (320, 240), (0.0, 40.0), (40, 40, 0, 0)),
    ((101, 333), (320, 320), True, 320 / 333, (320, 97), (0.0, 111.5), (111, 112, 0, 0)),
    ((319, 320), (320, 320), True, 1.0, (320, 319), (0.0, 0.5), (0, 1, 0, 0)),
    ((200, 100), (256, 320), True, 1.28, (128, 256), (96.0, 0.0), (0, 0, 96, 96)),
    ((77, 51), (320, 320), False, 1.0, (51, 77), (134.5, 121.5), (121, 122, 134, 135)),
    ((77, 51), (320, 320), True, 320 / 77, (212, 320), (54.0, 0.0), (0, 0, 54, 54)),
    ((641, 639), (640, 640), True, 640 / 641, (638, 640), (1.0, 0.0), (0, 0, 1, 1)),
]


@pytest.mark.parametrize("shape, target, scaleup, ratio, unpad, pad, borders", CASES)
def test_letterbox_matches_yolov5_placement(shape, target, scaleup, ratio, unpad, pad, borders) -> None:
    out, placed = letterbox(flat(*shape), target, scaleup=scaleup)
    assert out.shape == (*target, 3)
    assert placed.shape == shape and placed.ratio == pytest.approx(ratio) and placed.pad == pytest.approx(pad)
    top, bottom, left, right = borders
    h, w = target
    inner = out[top:h - bottom, left:w - right]
    assert inner.shape[:2] == (unpad[1], unpad[0])
    assert (inner == (10, 20, 30)).all()  # a flat colour stays flat through bilinear resizing
    mask = np.ones(target, bool)
    mask[top:h - bottom, left:w - right] = False
    assert (out[mask] == GREY).all()


def test_letterbox_keeps_pixels_when_no_resize_is_needed() -> None:
    image = np.random.default_rng(0).integers(0, 256, (250, 320, 3), dtype=np.uint8)
    out, placed = letterbox(image, 320)
    assert placed.ratio == 1.0 and placed.pad == (0.0, 35.0)
    assert np.array_equal(out[35:285], image)


def test_letterbox_resizes_with_opencv_bilinear() -> None:
    image = np.random.default_rng(1).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    out, _ = letterbox(image, 320)
    want = cv2.resize(image, (320, 160), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[80:240], want)


def test_scale_boxes_undoes_the_letterbox() -> None:
    _, placed = letterbox(flat(101, 333), 320)
    original = np.array([[10.0, 20.0, 110.0, 90.0], [0.0, 0.0, 333.0, 101.0]], np.float32)
    r, (dw, dh) = placed.ratio, placed.pad
    in_input = original * r + np.array([dw, dh, dw, dh], np.float32)
    np.testing.assert_allclose(scale_boxes(in_input, placed), original, atol=1e-4)
    clipped = scale_boxes(np.array([[-50.0, -50.0, 400.0, 400.0]], np.float32), placed)
    np.testing.assert_allclose(clipped, [[0, 0, 333, 101]])


def test_to_input_is_rgb_chw_in_unit_range() -> None:
    x = to_input(flat(2, 3, (10, 20, 30)))
    assert x.shape == (3, 2, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [30 / 255, 20 / 255, 10 / 255])


def write_image(path: Path, h: int = 40, w: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), flat(h, w))
    return path


def test_folder_with_bad_files_is_skipped_or_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not an image at all")
    (tmp_path / "c.png").write_bytes(b"")
    source = load_data(tmp_path)
    assert not source.labelled and len(source) == 3
    loader = ImageLoader(source, (64, 64), batch_size=4)
    batches = list(loader)
    assert [len(b) for b in batches] == [1] and batches[0].images.shape == (1, 3, 64, 64)
    assert len(loader.skipped) == 2 and "b.jpg" in loader.skipped[0] and "c.png" in loader.skipped[1]
    with pytest.raises(UserError, match="b.jpg: not a decodable image"):
        list(ImageLoader(source, (64, 64), on_error="fail"))


def make_yolo_set(root: Path) -> Path:
    for i in range(3):
        write_image(root / "images" / "val" / f"{i}.jpg", 50 + i, 80)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "0.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.05 0.05\n")
    (root / "labels" / "val" / "1.txt").write_text("3 0.5 0.5 0.2 0.4\n")  # class beyond names
    # image 2 has no label file: a background image
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames: {0: cat, 1: dog, 2: bird}\n")
    return root / "data.yaml"


def test_data_yaml_split_names_and_labels(tmp_path: Path) -> None:
    source = load_data(make_yolo_set(tmp_path))
    assert source.names == ["cat", "dog", "bird"] and source.labelled and len(source) == 3
    assert label_path(tmp_path / "images" / "val" / "0.jpg") == tmp_path / "labels" / "val" / "0.txt"
    loader = ImageLoader(source, (64, 64), batch_size=8)
    (batch,) = list(loader)
    assert len(batch) == 2 and len(loader.skipped) == 1 and "class 3 but only 3 names" in loader.skipped[0]
    np.testing.assert_allclose(batch.labels[0], [[1, 0.5, 0.5, 0.2, 0.4], [0, 0.1, 0.1, 0.05, 0.05]])
    assert batch.labels[1].shape == (0, 5)


def test_data_yaml_errors_are_one_line(tmp_path: Path) -> None:
    data = make_yolo_set(tmp_path)
    with pytest.raises(UserError, match="no 'train' entry"):
        load_data(data, "train")
    (tmp_path / "labels" / "val" / "0.txt").write_text("1 0.5 0.5 0.2\n")
    loader = ImageLoader(load_data(data), (64, 64), on_error="fail")
    with pytest.raises(UserError, match=r"0.txt:1: expected 'class x y w h'"):
        list(loader)


def test_polygon_labels_become_their_bounding_box(tmp_path: Path) -> None:
    from attn_deploy.data.source import read_labels

    f = tmp_path / "seg.txt"
    f.write_text("2 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    np.testing.assert_allclose(read_labels(f), [[2, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)


def test_fixed_batch_is_padded_with_grey(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    (batch,) = list(ImageLoader(load_data(tmp_path), (32, 32), batch_size=4))
    padded = batch.padded(4)
    assert padded.shape == (4, 3, 32, 32) and np.allclose(padded[1:], 114 / 255)
