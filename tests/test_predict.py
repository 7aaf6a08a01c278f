"""``minicnn predict`` on images as people make them: dark ink on white, transparent
backgrounds, large and off-centre digits, any size and channel count, folders, ``--json``.
Real MNIST test digits are rendered those ways (skipped when MNIST is absent); the rest uses
small generated images."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicnn.cli import main
from minicnn.data import DataError, load_dataset
from minicnn.preprocess import image_files, prepare_image
from minicnn.train import TrainConfig, fit

DATA_DIR = os.environ.get("MINICNN_DATA_DIR")
needs_mnist = pytest.mark.skipif(
    not DATA_DIR or not (Path(DATA_DIR) / "mnist").is_dir(),
    reason="real MNIST not found in $MINICNN_DATA_DIR")
MNIST_SHAPE = (1, 28, 28)


def correlation(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def enlarge(digit, size):
    return np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR))


# Four ways a person might hand us the digit ``d`` (uint8 28x28, white on black).
def as_original(d):
    return Image.fromarray(d)


def dark_on_white_rgb(d):
    return Image.fromarray(np.repeat((255 - enlarge(d, 200))[..., None], 3, axis=2), "RGB")


def black_on_transparent(d):
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[..., 3] = enlarge(d, 200)                  # black ink: colour 0, the digit in alpha
    return Image.fromarray(rgba, "RGBA")


def off_centre_on_white(d):
    canvas = np.full((240, 320), 255, np.uint8)
    canvas[20:110, 200:290] = 255 - enlarge(d, 90)
    return Image.fromarray(canvas, "L")


RENDERINGS = {"original": (as_original, False), "dark-on-white": (dark_on_white_rgb, True),
              "transparent": (black_on_transparent, True),
              "off-centre": (off_centre_on_white, True)}


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist", "test", data_dir=DATA_DIR, limit=100)


@needs_mnist
@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_preprocessing_recovers_mnist_digits(rendering, mnist_test, tmp_path):
    render, inverted = RENDERINGS[rendering]
    scores = []
    for i, image in enumerate(mnist_test.images):
        path = tmp_path / f"{i}.png"
        render(image[0]).save(path)
        prepared = prepare_image(path, MNIST_SHAPE, "mnist")
        assert prepared.image.shape == MNIST_SHAPE and prepared.inverted is inverted
        scores.append(correlation(prepared.image[0], image[0] / 255.0))
    # Measured: median 0.97-1.0 and 98 % above 0.8 for every rendering.
    assert np.median(scores) > 0.9, rendering
    assert np.mean(np.array(scores) > 0.8) >= 0.9, rendering


@needs_mnist
def test_predict_gives_the_same_digits_for_rendered_images(tmp_path, capsys):
    run = tmp_path / "run"
    fit(TrainConfig(dataset="mnist", data_dir=DATA_DIR, epochs=1, limit=3000, test_limit=100,
                    val_size=200, batch_size=32, lr=0.05, backend="im2col", seed=0),
        run, progress=False, log=None)
    digits = load_dataset("mnist", "test", data_dir=DATA_DIR, limit=60).images
    folders = {}
    for name, (render, _) in RENDERINGS.items():
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i, image in enumerate(digits):
            render(image[0]).save(folders[name] / f"{i:03d}.png")
    predicted = {}
    for name, folder in folders.items():
        assert main(["predict", str(run), str(folder), "--json", "--top", "2",
                     "--backend", "im2col"]) == 0
        captured = capsys.readouterr()
        entries = json.loads(captured.out)
        assert [Path(e["image"]).name for e in entries] == [f"{i:03d}.png" for i in range(60)]
        assert all(len(e["top"]) == 2 and e["top"][0]["probability"] >= e["top"][1]["probability"]
                   for e in entries)
        predicted[name] = [e["top"][0]["label"] for e in entries]
        assert ("inverted" in captured.err) is RENDERINGS[name][1]
    truth = [str(label) for label in load_dataset("mnist", "test", data_dir=DATA_DIR,
                                                  limit=60).labels]
    assert np.mean(np.array(predicted["original"]) == truth) > 0.7   # the model works
    for name in ("dark-on-white", "transparent", "off-centre"):
        agreement = np.mean(np.array(predicted[name]) == predicted["original"])
        assert agreement >= 0.85, (name, agreement)


# ---------------------------------------------------------------------------------------------
# Generated images: no data set needed
# ---------------------------------------------------------------------------------------------
def save(tmp_path, name, array, mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode).save(path)
    return path


def test_colour_is_converted_to_gray_by_luminance(tmp_path):
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255
    prepared = prepare_image(save(tmp_path, "red.png", red), MNIST_SHAPE, enhance=False)
    assert prepared.image.shape == MNIST_SHAPE
    assert np.allclose(prepared.image, 0.299, atol=1e-3)


def test_light_ink_on_black_is_not_inverted_and_fills_the_frame_outside_digit_sets(tmp_path):
    square = np.zeros((50, 50), np.uint8)
    square[10:20, 30:40] = 255
    prepared = prepare_image(save(tmp_path, "sq.png", square), MNIST_SHAPE, "fashion-mnist")
    assert not prepared.inverted
    ink = np.argwhere(prepared.image[0] > 0.5)
    assert ink.min(axis=0).tolist() == [0, 0] and ink.max(axis=0).tolist() == [27, 27]


def test_colour_runs_only_resize(tmp_path):
    photo = np.full((64, 48, 3), 230, np.uint8)      # light border, as many photos have
    photo[20:40, 10:30] = (200, 30, 30)
    prepared = prepare_image(save(tmp_path, "p.jpg", photo), (3, 32, 32), "cifar10")
    assert prepared.image.shape == (3, 32, 32) and not prepared.inverted
    assert prepared.image[:, 0, 0] == pytest.approx([230 / 255] * 3, abs=0.02)


def test_gray_with_alpha_and_blank_images(tmp_path):
    la = np.zeros((40, 40, 2), np.uint8)
    la[10:30, 18:22, 1] = 255                          # a black bar on transparency
    prepared = prepare_image(save(tmp_path, "la.png", la, "LA"), MNIST_SHAPE, "mnist")
    assert prepared.inverted and prepared.image.max() > 0.9
    assert prepared.image[0, 14, 14] > 0.5 and prepared.image[0, 0, 0] == 0
    blank = prepare_image(save(tmp_path, "white.png", np.full((30, 30), 255, np.uint8)),
                          MNIST_SHAPE, "mnist")
    assert blank.image.shape == MNIST_SHAPE and not np.any(blank.image)


def test_sixteen_bit_and_palette_images_are_read(tmp_path):
    deep = np.zeros((30, 30), np.uint16)
    deep[5:25, 12:18] = 65535
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert prepare_image(path, MNIST_SHAPE, "mnist").image.max() > 0.9
    palette = Image.fromarray(np.where(deep > 0, 255, 0).astype(np.uint8)).convert("P")
    palette.save(tmp_path / "p.gif")
    assert prepare_image(tmp_path / "p.gif", MNIST_SHAPE, "mnist").image.max() > 0.9


def test_folders_expand_to_their_images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert [p.name for p in image_files([folder, tmp_path / "x.png"])] == ["a.JPG", "b.png",
                                                                          "x.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        image_files([empty])
