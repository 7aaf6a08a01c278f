"""Detection end to end: scenes from real MNIST, training through ``fit`` (run folder,
checkpoints, exact resume), ``minicnn evaluate`` / ``detect`` / ``predict`` and their refusals.
Tiny runs (a few hundred scenes): these check the plumbing, not the accuracy target."""

import json
import os
import signal

import numpy as np
import pytest

import minicnn
from assertions import raises
from data_helpers import real_data_dir
from minicnn.cli import main
from minicnn.data import load_dataset
from minicnn.detection import SceneDataset, make_scenes
from minicnn.train import TrainConfig, fit

pytestmark = pytest.mark.slow          # trains (tiny) detectors on real MNIST scenes


@pytest.fixture(scope="module")
def mnist_dir():
    return str(real_data_dir("mnist").parent)


def tiny_config(data_dir, **overrides):
    values = dict(dataset="mnist-scenes", model="tiny-detector", epochs=2, batch_size=32,
                  lr=2e-3, optimizer="adam", weight_decay=0.0, augment=False, limit=192,
                  test_limit=48, val_size=32, seed=3, data_dir=data_dir)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("detect") / "run"
    result = fit(tiny_config(mnist_dir), out, progress=False, log=None)
    return out, result


def test_scene_splits_come_from_their_own_mnist_split(mnist_dir):
    test_scenes = load_dataset("mnist-scenes", "test", data_dir=mnist_dir, limit=5, seed=4)
    train_scenes = load_dataset("mnist-scenes", "train", data_dir=mnist_dir, limit=5, seed=4)
    assert isinstance(test_scenes, SceneDataset) and test_scenes.image_shape == (1, 96, 96)
    digits = load_dataset("mnist", "test", data_dir=mnist_dir)
    stream = np.random.SeedSequence(4, spawn_key=(1, 0x5CE4E))
    images, targets = make_scenes(digits.images, digits.labels, 5, np.random.default_rng(stream))
    assert np.array_equal(test_scenes.images, images)
    assert np.array_equal(test_scenes.targets, targets)
    assert not np.array_equal(train_scenes.images, test_scenes.images)
    again = load_dataset("mnist-scenes", "test", data_dir=mnist_dir, limit=5, seed=4)
    assert np.array_equal(again.images, test_scenes.images)


def test_fit_writes_a_detection_run_folder(detection_run):
    out, result = detection_run
    for name in ("config.json", "meta.json", "checkpoint.npz", "model.npz", "history.json",
                 "result.json"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "val_loss", "val_map"} <= set(history[0])
    assert "train_accuracy" not in history[0]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    stored = json.loads((out / "result.json").read_text())
    assert set(stored) == {"test_map", "test_loss", "test_ap"} and len(stored["test_ap"]) == 10
    assert 0.0 <= result["test_map"] <= 1.0 and result["task"] == "detection"


def test_detection_resume_mid_epoch_equals_uninterrupted(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir, epochs=1, val_size=0, limit=160)
    full = fit(config, tmp_path / "full", progress=False, log=None)
    import minicnn.optim as optim_module

    steps = {"n": 0}
    original_step = optim_module.Adam.step

    def step_then_interrupt(self):
        original_step(self)
        steps["n"] += 1
        if steps["n"] == 2:                      # Ctrl-C in the middle of the epoch
            os.kill(os.getpid(), signal.SIGINT)

    optim_module.Adam.step = step_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(config, tmp_path / "cut", progress=False, log=None)
    finally:
        optim_module.Adam.step = original_step
    resumed = fit(config, tmp_path / "cut", resume=True, progress=False, log=None)
    assert resumed["history"][0]["train_loss"] == full["history"][0]["train_loss"]
    assert resumed["test_map"] == full["test_map"]
    a = minicnn.load(tmp_path / "full" / "model.npz")
    b = minicnn.load(tmp_path / "cut" / "model.npz")
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_a_model_and_data_set_of_different_tasks_are_refused(tmp_path, mnist_dir):
    raises(ValueError, lambda: fit(tiny_config(mnist_dir, model="lenet5"), tmp_path / "a",
                                   progress=False, log=None),
           "'lenet5' is for classification", "mnist-scenes", "tiny-detector")
    raises(ValueError, lambda: fit(tiny_config(mnist_dir, dataset="mnist"), tmp_path / "b",
                                   progress=False, log=None), "is for classification",
           "lenet5")
    raises(ValueError, lambda: fit(tiny_config(mnist_dir, augment=True), tmp_path / "c",
                                   progress=False, log=None), "augment must be off")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_cli_evaluate_prints_map_and_writes_figures(detection_run, capsys):
    out, _ = detection_run
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mAP@0.5" in text and "AP@0.5  objects" in text
    for name in ("precision_recall.png", "detections.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name


def _png(path, pixels):
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return path


def test_cli_detect_any_size_and_colour_boxes_stay_inside(detection_run, tmp_path, capsys):
    out, _ = detection_run
    rng = np.random.default_rng(0)
    # A wide colour picture, dark digits on white: inverted, resized, boxes mapped back.
    scene = load_dataset("mnist-scenes", "test", limit=1, seed=9,
                         data_dir=json.loads((out / "config.json").read_text())["data_dir"])
    gray = 255 - np.kron(scene.images[0, 0], np.ones((2, 3), dtype=np.uint8))   # 192x288
    colour = np.dstack([gray, gray, gray])
    picture = _png(tmp_path / "wide.png", colour)
    small = _png(tmp_path / "small.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    assert main(["detect", str(out), str(picture), str(small), "--json",
                 "--threshold", "0.0"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [r["image"] for r in results] == [str(picture), str(small)]
    assert results[0]["inverted"] is True and "inverted" in captured.err
    for result, (height, width) in zip(results, [(192, 288), (20, 30)]):
        assert result["boxes"], "threshold 0 keeps every box NMS leaves"
        for entry in result["boxes"]:
            x0, y0, x1, y1 = entry["box"]
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
            assert entry["label"] in [str(i) for i in range(10)] and 0 <= entry["score"] <= 1
    assert main(["detect", str(out), str(picture), "--out", str(tmp_path / "boxes.png")]) == 0
    assert (tmp_path / "boxes.png").stat().st_size > 0
    assert main(["detect", str(out), str(picture), str(small), "--out",
                 str(tmp_path / "drawn")]) == 0
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == [
        "small_boxes.png", "wide_boxes.png"]


def test_cli_detect_refuses_bad_images_and_classification_runs(detection_run, tmp_path,
                                                                capsys):
    out, _ = detection_run
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    assert main(["detect", str(out), str(empty), str(text)]) == 1
    err = capsys.readouterr().err
    assert "empty.png: cannot use this image" in err and "notes.png: cannot use" in err
    assert "2 of 2 image(s) could not be used" in err
    assert main(["detect", str(out), str(tmp_path / "missing.png")]) == 1
    assert "missing.png" in capsys.readouterr().err


def test_predict_and_detect_name_the_command_each_run_needs(detection_run, tmp_path, capsys):
    out, _ = detection_run
    picture = _png(tmp_path / "p.png", np.zeros((28, 28), dtype=np.uint8))
    assert main(["predict", str(out), str(picture)]) == 1
    err = capsys.readouterr().err
    assert "detection run" in err and "use `minicnn detect`" in err
    classifier = tmp_path / "classifier"
    fit(TrainConfig(dataset="synthetic", model="lenet5", epochs=1, limit=64, test_limit=32,
                    batch_size=32, backend="im2col"), classifier, progress=False, log=None)
    assert main(["detect", str(classifier), str(picture)]) == 1
    err = capsys.readouterr().err
    assert "classification run" in err and "use `minicnn predict`" in err


def test_detect_array_refuses_unexpected_channels(detection_run):
    from minicnn.data import DataError
    from minicnn.detection.inference import detect_image
    from minicnn.train import load_run

    out, _ = detection_run
    _, model, meta = load_run(out)
    raises(DataError, lambda: detect_image(model, meta, np.zeros((10, 10, 2))), "C = 1, 3 or 4",
           "(10, 10, 2)")
    raises(DataError, lambda: detect_image(model, meta, np.zeros((0, 10))), "empty")
    found = detect_image(model, meta, np.zeros((50, 70, 4)), threshold=0.0)
    assert found.boxes.shape[1] == 4


def test_cli_train_defaults_for_a_detector(tmp_path, mnist_dir, capsys, monkeypatch):
    from minicnn import cli
    from minicnn.cli import build_parser, config_from_args

    monkeypatch.setitem(cli.QUICK, "test_limit", 48)       # keep the test seconds long

    args = build_parser().parse_args(["train", "--dataset", "mnist-scenes", "--model",
                                      "tiny-detector"])
    config = config_from_args(args)
    assert (config.optimizer, config.lr, config.batch_size, config.epochs, config.augment) == (
        "adam", 2e-3, 32, 3, False)
    assert main(["train", "--dataset", "mnist-scenes", "--model", "tiny-detector", "--limit",
                 "64", "--epochs", "1", "--quick", "--data-dir", mnist_dir, "--no-progress",
                 "--out", str(tmp_path / "q")]) == 0
    assert "test mAP@0.5" in capsys.readouterr().out
    for name in ("curves.png", "precision_recall.png", "detections.png", "model.npz"):
        assert (tmp_path / "q" / name).exists(), name
    assert main(["train", "--dataset", "mnist-scenes", "--out", str(tmp_path / "r"),
                 "--data-dir", mnist_dir]) == 1
    assert "'lenet5' is for classification" in capsys.readouterr().err
