"""ImageFolder and load_image on PNG/JPEG files written by the tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minicnn.data import DataError, DataLoader, ImageFolder, load_image


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    (root / "dog").mkdir(parents=True)
    (root / "cat").mkdir()
    (root / ".hidden").mkdir()
    Image.fromarray(np.full((28, 28), 200, np.uint8), "L").save(root / "cat" / "a.png")
    Image.fromarray(np.full((40, 30, 3), [255, 0, 0], np.uint8), "RGB").save(
        root / "cat" / "b.JPG", quality=95)                     # colour, other size
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(root / "dog" / "c.png")  # wrong channels: RGBA
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(
        root / "dog" / "d.jpeg")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_classes_labels_shapes(folder):
    ds = ImageFolder(folder, image_size=(28, 28), channels=1)
    assert ds.classes == ["cat", "dog"]
    assert ds.images.shape == (4, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert [p.name for p in ds.files] == ["a.png", "b.JPG", "c.png", "d.jpeg"]
    assert ds.images[0].min() == ds.images[0].max() == 200
    red_luma = round(0.299 * 255)
    assert abs(int(ds.images[1].mean()) - red_luma) <= 3      # RGB -> L, resized
    green_luma = round(0.587 * 255)
    assert abs(int(ds.images[2].mean()) - green_luma) <= 1    # RGBA -> L, upscaled
    assert len(ds.mean) == 1 and 0 < ds.mean[0] < 1 and ds.std[0] > 0
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [0, 0, 1, 1]


def test_rgb_and_other_size(folder):
    ds = ImageFolder(folder, image_size=(16, 12), channels=3)
    assert ds.images.shape == (4, 3, 16, 12)
    np.testing.assert_array_equal(ds.images[2, :, 5, 5], [0, 255, 0])  # RGBA -> RGB
    assert ds.images[1, 0].mean() > 240 and ds.images[1, 1:].mean() < 15
    assert len(ds.mean) == 3


def test_unreadable_file_is_named(folder):
    bad = folder / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        ImageFolder(folder)


def test_truncated_jpeg_is_named(folder):
    path = folder / "cat" / "b.JPG"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"b\.JPG"):
        ImageFolder(folder)


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no image files"):
        ImageFolder(tmp_path)


def test_load_image(folder):
    x = load_image(folder / "cat" / "b.JPG", image_size=(32, 32), channels=3)
    assert x.shape == (3, 32, 32) and x.dtype == np.uint8
    g = load_image(folder / "dog" / "d.jpeg", image_size=None, channels=1)
    assert g.shape == (1, 28, 28)
    assert load_image(folder / "cat" / "a.png", 8).shape == (1, 8, 8)
    with pytest.raises(DataError, match="no such image"):
        load_image(folder / "nope.png")
    with pytest.raises(DataError, match="channels"):
        load_image(folder / "cat" / "a.png", channels=2)


def test_sixteen_bit_png(tmp_path):
    arr = np.full((5, 5), 65535, np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png", None).max() == 255


def test_an_empty_class_folder_is_refused_by_name(folder):
    (folder / "bird").mkdir()                        # no images at all
    (folder / "fish").mkdir()
    (folder / "fish" / "readme.txt").write_text("only a non-image")
    with pytest.raises(DataError) as info:
        ImageFolder(folder)
    message = str(info.value)
    assert "found no valid file for the classes bird, fish" in message
    assert "cat" not in message.split("classes")[1].split("(")[0]   # full classes not listed
    assert ".png" in message                         # says which extensions count
