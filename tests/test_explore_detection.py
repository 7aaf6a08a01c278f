"""``minicnn explore`` for a detection run, through a real HTTP server on loopback.

The boxes the page gets must be the ones ``minicnn detect --json`` prints for the same image
(the explorer calls the same function), every layer's values must be the layers run by hand on
the detector's input canvas, and the saliency of a box must be the gradient of its score (its
cell's ``sigmoid(objectness) * max softmax``, as the decoder rates it) by central differences.
Bad requests still get a 4xx. The run is a tiny detector trained for two steps on real MNIST
scenes: these tests check the plumbing, so they ask for boxes down to a low score (a barely
trained detector scores everything low) and compare them with ``detect --threshold`` alike.
"""

import json

import numpy as np
import pytest
from PIL import Image

from data_helpers import real_data_dir
from minicnn import nn
from minicnn.cli import main
from minicnn.data import load_dataset
from minicnn.detection import decode
from minicnn.detection.inference import fit_to_input, gray_image
from minicnn.explore import Explorer, ExploreError, encode, open_run, start_in_thread
from minicnn.explore.detection import DetectionExplorer, cell_scores
from minicnn.preprocess import decode_rgba, ink_on_black
from minicnn.train import RunMeta, TrainConfig, fit, load_run
from test_explore_api import (Client, assert_refused, central_differences, half_step,
                              png_bytes)

pytestmark = pytest.mark.slow          # trains a (tiny) detector on real MNIST scenes

LOW = 0.02      # the lowest score of a box compared here: the tiny detector's are about 0.05


@pytest.fixture(scope="module")
def mnist_dir():
    return str(real_data_dir("mnist").parent)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("explore-detect") / "run"
    fit(TrainConfig(dataset="mnist-scenes", model="tiny-detector", epochs=1, batch_size=32,
                    lr=2e-3, optimizer="adam", weight_decay=0.0, augment=False, limit=64,
                    test_limit=8, val_size=0, seed=3, data_dir=mnist_dir),
        out, progress=False, log=None)
    return out


@pytest.fixture(scope="module")
def explorer(run_folder):
    _, model, meta = load_run(run_folder)
    return DetectionExplorer(model, meta, name="run", threshold=LOW)


@pytest.fixture(scope="module")
def served(explorer):
    server, _ = start_in_thread(explorer)
    yield Client(server)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, mnist_dir):
    """Three test scenes as PNG files, and one made as a person might: dark digits on a white,
    wider-than-high RGB picture (inverted, then scaled to fit the detector's input)."""
    folder = tmp_path_factory.mktemp("pictures")
    scenes = load_dataset("mnist-scenes", "test", data_dir=mnist_dir, limit=3, seed=11)
    paths = []
    for index, scene in enumerate(scenes.images):
        paths.append(folder / f"scene{index}.png")
        Image.fromarray(scene[0]).save(paths[-1])
    wide = np.full((120, 200, 3), 255, np.uint8)
    wide[10:106, 60:156] = 255 - scenes.images[0, 0][..., None]
    paths.append(folder / "dark_on_white.png")
    Image.fromarray(wide).save(paths[-1])
    return paths


def test_from_run_gives_a_detection_explorer(run_folder):
    explorer = open_run(run_folder)
    assert isinstance(explorer, DetectionExplorer) and explorer.task == "detection"
    info = explorer.info()
    assert info["task"] == "detection" and info["threshold"] == 0.5
    assert info["stride"] == 16 and info["layers"][-1]["shape"] == [15, 6, 6]
    assert info["classes"] == [str(k) for k in range(10)]


@pytest.mark.parametrize("enhance", [True, False])
def test_boxes_equal_minicnn_detect_json(served, run_folder, pictures, capsys, enhance):
    assert main(["detect", str(run_folder), *map(str, pictures), "--json", "--threshold",
                 str(LOW), *([] if enhance else ["--no-preprocess"])]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert [e["image"] for e in expected] == [str(p) for p in pictures]
    for path, entry in zip(pictures, expected):
        status, result = served.analyse(path.read_bytes(), enhance)
        assert status == 200, result
        assert result["task"] == "detection"
        shown = [{key: box[key] for key in ("label", "score", "box")} for box in result["boxes"]]
        assert shown == entry["boxes"], path.name
        assert result["inverted"] is entry["inverted"]
    assert expected[-1]["inverted"] is enhance          # the dark-on-white picture
    assert sum(len(e["boxes"]) for e in expected) >= 4  # boxes were compared, not just []


def test_every_layer_equals_the_layers_run_by_hand(served, explorer, run_folder, pictures):
    path = pictures[-1]
    status, result = served.analyse(path.read_bytes())
    assert status == 200
    _, model, meta = load_run(run_folder)
    model.eval()
    ink, inverted = ink_on_black(gray_image(decode_rgba(path.read_bytes())))
    canvas, scale = fit_to_input(ink, 96, 96)
    assert inverted and result["scale"] == pytest.approx(scale) and scale < 1
    assert result["picture_size"] == [120, 200]
    x = ((canvas - np.float32(meta.mean[0])) / np.float32(meta.std[0]))[None, None]
    assert len(result["layers"]) == len(model)
    for index, layer in enumerate(model):
        x = layer(x)
        status, exact = served.get(f"/api/layer?input={result['id']}&layer={index}")
        assert status == 200 and exact["kind"] == type(layer).__name__
        # The server computes on its own thread, where the kernels may split the work
        # otherwise: measured up to 1.4e-6 apart (values up to ~1), so 1e-5.
        np.testing.assert_allclose(encode.unexact(exact), x[0], rtol=1e-5, atol=1e-5)
        picture = result["layers"][index]["maps"]
        np.testing.assert_allclose(encode.unpicture(picture), x[0], atol=half_step(picture))
    # The boxes are the decoded grid of that last output, mapped back to the picture's pixels.
    found = decode(x, 16, 32.0, score_threshold=LOW, iou_threshold=0.5, image_size=(96, 96))[0]
    found_boxes = found["boxes"][found["scores"] >= LOW]
    assert len(result["boxes"]) == len(found_boxes) > 0
    picture_part = np.array([200, 120, 200, 120]) * scale     # where the picture lies on it
    for box, by_hand in zip(result["boxes"], found_boxes):
        np.testing.assert_allclose(box["input_box"], np.minimum(by_hand, picture_part),
                                   atol=1e-6)
    # Every cell's score as the decoder rates it: the boxes' scores are among them.
    scores = encode.unexact(result["cell_scores"])
    assert scores.shape == (6, 6)
    for box in result["boxes"]:
        assert np.abs(scores - box["score"]).min() < 5e-5
    assert scores.max() == pytest.approx(result["boxes"][0]["score"], abs=5e-5)
    assert result["steps"][-1]["name"].startswith("normalised")
    assert [s["name"] for s in result["steps"][:2]] == ["as drawn",
                                                       "light on black, full contrast"]


# ---------------------------------------------------------------------------------------------
# Saliency of a box's score, by central differences on a detector small enough for them
# ---------------------------------------------------------------------------------------------
def tiny_detector(rng, classes=3, size=16):
    """conv 3x3 -> ReLU -> max pool -> conv 3x3 -> max pool: a 4x4 grid of 4-pixel cells, each
    with objectness, box and ``classes`` logits."""
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, rng=rng, backend="im2col"), nn.ReLU(),
        nn.MaxPool2d(2, backend="im2col"),
        nn.Conv2d(3, 5 + classes, 3, padding=1, rng=rng, backend="im2col"),
        nn.MaxPool2d(2, backend="im2col"))
    model.stride, model.prior = 4, 8.0
    meta = RunMeta(input_shape=(1, size, size), mean=[0.2], std=[0.6],
                   classes=[f"c{k}" for k in range(classes)], model="tiny", dataset="tiny")
    return DetectionExplorer(model, meta, name="tiny", threshold=0.0)


def score_differences(explorer, canvas: np.ndarray, cell, eps=1e-4) -> np.ndarray:
    """d(score of ``cell``) / d(canvas pixel) by central differences, in float64."""
    import copy

    model64 = copy.deepcopy(explorer.model).double()
    mean, std = explorer.meta.mean[0], explorer.meta.std[0]

    def score(pixels):
        head = model64(((pixels - mean) / std)[None, None])[0]
        return cell_scores(head)[0][cell]

    return central_differences(score, canvas, eps)


def test_box_saliency_equals_central_differences(rng):
    explorer = tiny_detector(rng)
    server, _ = start_in_thread(explorer)
    client = Client(server)
    try:
        data = png_bytes(rng.integers(0, 256, size=(16, 16), dtype=np.uint8))
        status, result = client.analyse(data, enhance=False)
        assert status == 200 and len(result["boxes"]) >= 2
        canvas = explorer.get(result["id"]).pixels[0]
        head = explorer.get(result["id"]).outputs[-1]
        scores = cell_scores(head)[0]
        # The decoder's boxes carry the scores of their cells: the top one is the best cell.
        top_cell = np.unravel_index(int(np.argmax(scores)), scores.shape)
        assert result["boxes"][0]["score"] == pytest.approx(scores[top_cell], abs=5e-5)
        assert result["saliency"]["box"] == 0
        expected = score_differences(explorer, canvas, top_cell)
        assert np.abs(expected).max() > 1e-3        # not a trivially zero case
        np.testing.assert_allclose(encode.unexact(result["saliency"])[0], expected,
                                   rtol=2e-3, atol=2e-4)
        # Another box: its own cell.
        second = result["boxes"][1]
        cell = np.unravel_index(int(np.argmin(np.abs(scores - second["score"]))), scores.shape)
        status, chosen = client.get(f"/api/saliency?input={result['id']}&box=1")
        assert status == 200 and chosen["box"] == 1
        np.testing.assert_allclose(encode.unexact(chosen)[0],
                                   score_differences(explorer, canvas, cell),
                                   rtol=2e-3, atol=2e-4)
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Bad requests, and what is not a detector
# ---------------------------------------------------------------------------------------------
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(served, pictures):
    status, result = served.analyse(pictures[0].read_bytes())
    assert status == 200
    input_id, count = result["id"], len(result["boxes"])
    cases = {
        "not an image": (lambda: served.analyse(b"not an image at all" * 10), 415,
                         "not a usable image"),
        "empty body": (lambda: served.analyse(b""), 400, "no image"),
        "box out of range": (lambda: served.get(f"/api/saliency?input={input_id}&box={count}"),
                             400, f"box must be 0..{count - 1}"),
        "negative box": (lambda: served.get(f"/api/saliency?input={input_id}&box=-1"), 400,
                         "box must be"),
        "class instead of box": (lambda: served.get(f"/api/saliency?input={input_id}&class=1"),
                                 400, "missing parameter 'box'"),
        "unknown input": (lambda: served.get("/api/saliency?input=feedbeef&box=0"), 404,
                          "unknown input"),
        "unknown layer": (lambda: served.get(f"/api/layer?input={input_id}&layer=99"), 404,
                          "unknown layer '99'"),
        "out of the grid": (lambda: served.get(f"/api/conv?input={input_id}&layer=0&channel=0"
                                               "&y=96&x=0"), 400, "y must be 0..95"),
    }
    assert_refused(served, cases)


def test_an_image_without_boxes_explains_the_best_cell(explorer):
    strict = DetectionExplorer(explorer.model, explorer.meta, threshold=0.999)
    analysis, found, _, gradient, top = strict.analyse(png_bytes(np.zeros((96, 96), np.uint8)))
    assert len(found.boxes) == 0 and top is None
    assert gradient.shape == (1, 96, 96) and np.abs(gradient).max() > 0
    with pytest.raises(ExploreError, match="no box was found"):
        strict.saliency(analysis.id, 0)


def test_a_classifier_is_not_a_detection_run(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), nn.Flatten(), nn.Linear(2 * 14 * 14, 15,
                                                                               rng=rng))
    meta = RunMeta(input_shape=(1, 16, 16), mean=[0.0], std=[1.0],
                   classes=[str(k) for k in range(10)], model="x", dataset="x")
    with pytest.raises(ExploreError, match="not a detection run: this model is not a detector"):
        DetectionExplorer(model, meta)
    model.stride, model.prior = 16, 32.0
    with pytest.raises(ExploreError, match=r"output has shape \(15,\), expected \(15, S, S\)"):
        DetectionExplorer(model, meta)


def test_a_colour_detector_is_refused_as_detect_refuses_it(rng):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=rng), nn.MaxPool2d(4))
    model.stride, model.prior = 4, 8.0
    meta = RunMeta(input_shape=(3, 16, 16), mean=[0.0] * 3, std=[1.0] * 3,
                   classes=["a", "b", "c"], model="x", dataset="x")
    with pytest.raises(ExploreError, match="3 input channels are not supported"):
        DetectionExplorer(model, meta)
