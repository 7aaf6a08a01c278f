"""Every command that opens a run refuses a hand-edited or damaged run-folder file in one line
naming the file and the field, with exit code 1 and no traceback (minicnn.runfolder)."""

from __future__ import annotations

import json
import shutil

import pytest

from minicnn.cli import main
from minicnn.runfolder import RunFolderError, read_config, read_history, read_meta
from minicnn.train import TrainConfig, fit


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished classification run (synthetic data, the im2col backend)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    fit(TrainConfig(dataset="synthetic", model="lenet5", epochs=1, batch_size=32, limit=96,
                    test_limit=32, val_size=0, backend="im2col", seed=1),
        out, progress=False, log=None)
    return out


@pytest.fixture
def image(tmp_path):
    from PIL import Image
    import numpy as np

    path = tmp_path / "digit.png"
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255
    Image.fromarray(pixels).save(path)
    return path


def _damage(run, tmp_path, name, content):
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    text = content if isinstance(content, str) else json.dumps(content)
    (copy / name).write_text(text)
    return copy


def _edited(run, name, **changes):
    values = json.loads((run / name).read_text())
    values.update(changes)
    return values


def _without(run, name, key):
    values = json.loads((run / name).read_text())
    del values[key]
    return values


# (file, what is written, words the one line must contain)
CONFIG_CASES = {
    "a list": ("config.json", lambda run: [1, 2], ["config.json", "JSON object"]),
    "a string seed": ("config.json", lambda run: _edited(run, "config.json", seed="7"),
                      ["config.json", "'seed'", "whole number"]),
    "a negative seed": ("config.json", lambda run: _edited(run, "config.json", seed=-1),
                        ["config.json", "seed"]),
    "no model": ("config.json", lambda run: _without(run, "config.json", "model"),
                 ["config.json", "'model'", "missing"]),
    "a float batch size": ("config.json",
                           lambda run: _edited(run, "config.json", batch_size=32.5),
                           ["config.json", "'batch_size'"]),
    "an unknown model": ("config.json", lambda run: _edited(run, "config.json", model="vgg99"),
                         ["config.json", "vgg99"]),
    "cut off": ("config.json", lambda run: '{"dataset": "synth', ["config.json", "JSON"]),
}
META_CASES = {
    "a list": ("meta.json", lambda run: ["x"], ["meta.json", "JSON object"]),
    "no classes": ("meta.json", lambda run: _without(run, "meta.json", "classes"),
                   ["meta.json", "'classes'", "missing"]),
    "a bad input shape": ("meta.json",
                          lambda run: _edited(run, "meta.json", input_shape=[1, 28]),
                          ["meta.json", "'input_shape'"]),
    "a mean per wrong channel count": ("meta.json",
                                       lambda run: _edited(run, "meta.json", mean=[0.1, 0.2]),
                                       ["meta.json", "'mean'"]),
    "a zero std": ("meta.json", lambda run: _edited(run, "meta.json", std=[0.0]),
                   ["meta.json", "'std'"]),
    "classes not strings": ("meta.json", lambda run: _edited(run, "meta.json", classes=[1, 2]),
                            ["meta.json", "'classes'"]),
    "another model": ("meta.json", lambda run: _edited(run, "meta.json", model="mnist-cnn"),
                      ["meta.json", "'model'", "config.json"]),
}
HISTORY_CASES = {
    "an object": ("history.json", lambda run: {"epoch": 1}, ["history.json", "list"]),
    "an entry that is a string": ("history.json", lambda run: ["epoch 1"],
                                  ["history.json", "entry 0"]),
    "an entry without its epoch": ("history.json", lambda run: [{"train_loss": 0.5}],
                                   ["history.json", "'epoch'"]),
    "a string loss": ("history.json", lambda run: [{"epoch": 1, "train_loss": "low"}],
                      ["history.json", "'train_loss'"]),
}

COMMANDS = {
    "evaluate": lambda run, image: ["evaluate", str(run), "--backend", "im2col"],
    "predict": lambda run, image: ["predict", str(run), str(image), "--backend", "im2col"],
    "detect": lambda run, image: ["detect", str(run), str(image), "--backend", "im2col"],
    "explore": lambda run, image: ["explore", str(run), "--no-browser", "--port", "0"],
    "train --resume": lambda run, image: ["train", "--out", str(run), "--resume",
                                          "--no-progress", "--backend", "im2col"],
    "export": lambda run, image: ["export", str(run), str(image.parent / "model.onnx")],
}
# Which files each command reads (train --resume rewrites meta.json and repairs
# history.json from its checkpoint, as it always has: see test_run_folder.py).
READS = {"evaluate": ("config.json", "meta.json", "history.json"),
         "predict": ("config.json", "meta.json"), "detect": ("config.json", "meta.json"),
         "explore": ("config.json", "meta.json"), "train --resume": ("config.json",),
         "export": ("config.json", "meta.json")}

CASES = [(command, f"{file_name}: {label}", file_name, make, words)
         for cases in (CONFIG_CASES, META_CASES, HISTORY_CASES)
         for label, (file_name, make, words) in cases.items()
         for command in COMMANDS if file_name in READS[command]]


@pytest.mark.parametrize("command, label, file_name, make, words", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_damaged_file_is_refused_in_one_line(command, label, file_name, make, words,
                                               finished_run, tmp_path, image, capsys):
    run = _damage(finished_run, tmp_path, file_name, make(finished_run))
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    assert main(COMMANDS[command](run, image)) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("minicnn: error: ") and "Traceback" not in captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    # Refused before anything was written: the folder is as it was.
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_the_untouched_run_passes_every_reader(finished_run):
    config = read_config(finished_run)
    meta = read_meta(finished_run / "meta.json", config)
    assert meta.model == config.model == "lenet5"
    assert [record["epoch"] for record in read_history(finished_run)] == [1]


def test_a_history_may_hold_nan(finished_run, tmp_path):
    """A detector's validation mAP is NaN when no scene holds an object: still a history."""
    run = _damage(finished_run, tmp_path, "history.json", '[{"epoch": 1, "val_map": NaN}]')
    assert read_history(run)[0]["epoch"] == 1


def test_errors_are_run_folder_errors(finished_run, tmp_path):
    run = _damage(finished_run, tmp_path, "config.json", {"dataset": "synthetic"})
    with pytest.raises(RunFolderError, match="'model' is missing"):
        read_config(run)


def test_a_negative_seed_is_named_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--seed", "-1", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--json", "--markdown", "--plot"])
def test_bench_refuses_an_output_it_cannot_write_before_running(flag, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["bench", "--suite", "tiny", flag, str(blocker / "out" / "results")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0] and "a-file" in lines[0], err


def test_bench_refuses_a_folder_as_output(tmp_path, capsys):
    assert main(["bench", "--suite", "tiny", "--json", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--json" in err and "folder" in err and len(err.strip().splitlines()) == 1
