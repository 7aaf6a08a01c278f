"""The training loop and the ``minicnn`` command line, end to end on the synthetic data set
(no files, seconds) and on a real-MNIST subset."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn import models
from minicnn.cli import main
from minicnn.data import DataError, load_dataset
from minicnn.train import TrainConfig, TrainingError, fit, load_run


def quick_config(**overrides):
    values = dict(dataset="synthetic", model="lenet5", epochs=2, batch_size=32, lr=0.05,
                  limit=2000, test_limit=300, val_size=200, seed=5, backend="im2col")
    values.update(overrides)
    return TrainConfig(**values)


def test_fit_writes_a_complete_run_folder(tmp_path):
    result = fit(quick_config(), tmp_path / "run", progress=False, log=None)
    run = tmp_path / "run"
    for name in ("config.json", "checkpoint.npz", "model.npz", "history.json", "result.json"):
        assert (run / name).exists(), name
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_accuracy", "lr", "images_per_second"} <= set(
        history[0])
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert result["test_accuracy"] > 0.3          # 10 classes: chance is 0.1
    config, model, _ = load_run(run)
    assert config.model == "lenet5"


def test_resume_equals_an_uninterrupted_run(tmp_path):
    full = fit(quick_config(epochs=3), tmp_path / "full", progress=False, log=None)
    # Stop after 1 epoch by running a 3-epoch config for one epoch only ...
    partial_config = quick_config(epochs=3)
    out = tmp_path / "resumed"
    (out).mkdir()
    # The classification task evaluates through this module's ``evaluate`` (validation after
    # each epoch): interrupting it stops the run between two epochs.
    import minicnn.tasks.classification as train_module

    calls = {"n": 0}
    original = train_module.evaluate

    def interrupt_after_first_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:                      # during epoch 2: simulate Ctrl-C
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    train_module.evaluate = interrupt_after_first_validation
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(partial_config, out, progress=False, log=None)
    finally:
        train_module.evaluate = original
    resumed = fit(partial_config, out, resume=True, progress=False, log=None)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    a = minicnn.load(tmp_path / "full" / "model.npz")
    b = minicnn.load(out / "model.npz")
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    """Ctrl-C inside an epoch saves the batch position; resuming continues bit-exactly."""
    full = fit(quick_config(epochs=1), tmp_path / "full", progress=False, log=None)
    import minicnn.optim as optim_module

    out = tmp_path / "cut"
    steps = {"n": 0}
    original_step = optim_module.SGD.step

    def step_then_interrupt(self):
        original_step(self)
        steps["n"] += 1
        if steps["n"] == 7:                      # Ctrl-C in the middle of the epoch
            os.kill(os.getpid(), signal.SIGINT)

    optim_module.SGD.step = step_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(quick_config(epochs=1), out, progress=False, log=None)
    finally:
        optim_module.SGD.step = original_step
    resumed = fit(quick_config(epochs=1), out, resume=True, progress=False, log=None)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert resumed["history"][0][key] == full["history"][0][key], key
    a = minicnn.load(tmp_path / "full" / "model.npz")
    b = minicnn.load(out / "model.npz")
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_diverging_run_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    fit(quick_config(epochs=1), out, progress=False, log=None)
    # Continue the run with an absurd learning rate: the next epoch must blow up.
    good = minicnn.load(out / "checkpoint.npz")
    good["optim.group0.lr"] = np.array(1e6)
    minicnn.save(good, out / "checkpoint.npz")
    config = json.loads((out / "config.json").read_text())
    config.update(epochs=2, schedule="none")
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(TrainingError, match="non-finite"):
        fit(quick_config(), out, resume=True, progress=False, log=None)
    kept = minicnn.load(out / "checkpoint.npz")
    for key in good:
        assert np.array_equal(good[key], kept[key]), key


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        fit(quick_config(), tmp_path / "empty", resume=True, progress=False, log=None)


def test_cli_train_evaluate_predict_end_to_end(tmp_path, capsys):
    out = tmp_path / "syn"
    code = main(["train", "--dataset", "synthetic", "--quick", "--out", str(out),
                 "--no-progress", "--backend", "im2col", "--seed", "1", "--limit", "1000"])
    assert code == 0
    for name in ("model.npz", "curves.png", "confusion.png", "misclassified.png"):
        assert (out / name).exists(), name
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "circle" in text
    # predict on PNGs written from the synthetic test images
    from PIL import Image

    test = load_dataset("synthetic", "test", limit=2, seed=1)
    paths = []
    for i, image in enumerate(test.images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(image[0]).save(path)
        paths.append(str(path))
    assert main(["predict", str(out), *paths]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith(str(tmp_path))]
    assert len(lines) == 2 and all(l.count("%") == 3 for l in lines)


def test_cli_user_errors_are_one_line_with_exit_code_1(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a run folder" in err and "Traceback" not in err
    # a run folder whose model is missing
    (tmp_path / "config.json").write_text(quick_config().to_json())
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "no trained model" in capsys.readouterr().err
    # an unreadable image
    run = tmp_path / "run"
    fit(quick_config(epochs=1), run, progress=False, log=None)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["predict", str(run), str(bad)]) == 1
    assert "bad.png" in capsys.readouterr().err
    # zero threads is refused while parsing, before any work starts
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "--dataset", "synthetic", "--threads", "0",
              "--out", str(tmp_path / "never")])
    assert excinfo.value.code == 2
    assert "--threads: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_cli_usage_errors_exit_2_and_list_choices(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "--dataset", "imagenet"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert "mnist" in err and "synthetic" in err
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "--model", "alexnet"])
    assert excinfo.value.code == 2
    assert "lenet5" in capsys.readouterr().err


def test_model_file_from_another_architecture_names_the_keys(tmp_path):
    run = tmp_path / "run"
    fit(quick_config(epochs=1), run, progress=False, log=None)
    other = models.mnist_cnn(rng=0)
    with pytest.raises(ValueError, match="shape mismatches"):
        minicnn.load(run / "model.npz", other)


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="lenet5"):
        models.build("alexnet", 1, 10)


def test_python_m_minicnn_help():
    result = subprocess.run([sys.executable, "-m", "minicnn", "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "datasets"):
        assert command in result.stdout
