"""Run folders are self-contained and survive kills: inference without the data set, after
the folder moved; atomic files with ordinary permissions; resume repairs what a kill left;
a refused command leaves no folder. Synthetic data (seconds); real MNIST where a test needs a
data set that can be taken away (skipped when absent)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn.train import TrainConfig, TrainingError, fit, load_run

DATA_DIR = Path(os.environ.get("MINICNN_DATA_DIR", "")).expanduser().resolve()
HAVE_MNIST = bool(os.environ.get("MINICNN_DATA_DIR")) and (DATA_DIR / "mnist").is_dir()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="real MNIST not found in "
                                                        "$MINICNN_DATA_DIR")


def small_config(**overrides):
    values = dict(dataset="synthetic", model="lenet5", epochs=2, batch_size=32, lr=0.05,
                  limit=400, test_limit=100, val_size=80, seed=3, backend="im2col")
    values.update(overrides)
    return TrainConfig(**values)


def no_data_env(tmp_path: Path) -> dict:
    """An environment in which no data set can be found or downloaded."""
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_DATA_DIR"}
    empty = tmp_path / "empty-cache"
    empty.mkdir(exist_ok=True)
    env.update(MINICNN_OFFLINE="1", MINICNN_CACHE_DIR=str(empty), MPLBACKEND="Agg")
    return env


def run_cli(args, cwd, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "minicnn", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False, **kwargs)


def write_png(path: Path, image_chw: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(image_chw[0]).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Self-contained: meta.json, absolute data_dir, no data set needed for predict
# ---------------------------------------------------------------------------------------------
def test_meta_json_holds_what_inference_needs(tmp_path):
    fit(small_config(epochs=1), tmp_path / "run", progress=False, log=None)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["input_shape"] == [1, 28, 28]
    assert meta["classes"][:2] == list(minicnn.data.SYNTHETIC_CLASSES)[:2]
    assert len(meta["mean"]) == len(meta["std"]) == 1 and meta["std"][0] > 0
    assert meta["model"] == "lenet5" and meta["dataset"] == "synthetic"


@needs_mnist
def test_a_moved_run_folder_predicts_without_data_and_evaluates_with_data_dir(tmp_path):
    # Train from one folder with a *relative* --data-dir ...
    work = tmp_path / "work"
    work.mkdir()
    data_link = work / "data"
    data_link.symlink_to(DATA_DIR, target_is_directory=True)
    env = no_data_env(tmp_path)
    trained = run_cli(["train", "--dataset", "mnist", "--data-dir", "data", "--limit", "600",
                       "--epochs", "1", "--batch-size", "50", "--out", "run", "--no-progress",
                       "--backend", "im2col", "--threads", "1"], cwd=work, env=env)
    assert trained.returncode == 0, trained.stderr
    config = json.loads((work / "run" / "config.json").read_text())
    assert Path(config["data_dir"]).is_absolute()
    # ... move the run folder elsewhere and use it from a third folder.
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(work / "run", moved)
    other = tmp_path / "other"
    other.mkdir()
    evaluated = run_cli(["evaluate", moved, "--backend", "im2col"], cwd=other, env=env)
    assert evaluated.returncode == 0, evaluated.stderr      # the stored absolute data_dir
    assert "accuracy" in evaluated.stdout
    # The data set goes away: predict still works, evaluate explains what is missing.
    data_link.unlink()
    from minicnn.data import load_dataset

    digit = load_dataset("mnist", "test", data_dir=DATA_DIR, limit=1).images[0]
    image = write_png(other / "digit.png", digit)
    predicted = run_cli(["predict", moved, image, "--backend", "im2col"], cwd=other, env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count("%") == 3
    missing = run_cli(["evaluate", moved], cwd=other, env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    # --data-dir is passed on to evaluate.
    explicit = run_cli(["evaluate", moved, "--data-dir", DATA_DIR, "--backend", "im2col"],
                       cwd=other, env=env)
    assert explicit.returncode == 0, explicit.stderr


def test_an_old_run_folder_without_meta_json_still_loads(tmp_path):
    run = tmp_path / "run"
    fit(small_config(epochs=1), run, progress=False, log=None)
    (run / "meta.json").unlink()
    config, model, meta = load_run(run)          # falls back to the (synthetic) data set
    assert meta.input_shape == (1, 28, 28) and len(meta.classes) == 10


@needs_mnist
def test_an_old_run_folder_whose_data_is_gone_is_a_clear_error(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(small_config(dataset="mnist", data_dir=str(DATA_DIR), epochs=1, limit=200,
                     test_limit=50, val_size=40), run, progress=False, log=None)
    (run / "meta.json").unlink()
    config = json.loads((run / "config.json").read_text())
    config["data_dir"] = "data"                   # the relative path older versions stored
    (run / "config.json").write_text(json.dumps(config))
    for key, value in no_data_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MINICNN_DATA_DIR", raising=False)
    with pytest.raises(TrainingError, match="meta.json"):
        load_run(run)
    assert load_run(run, data_dir=DATA_DIR)[2].classes[0] == "0"


# ---------------------------------------------------------------------------------------------
# Files written safely
# ---------------------------------------------------------------------------------------------
def test_every_file_is_complete_with_ordinary_permissions_and_no_temporaries(tmp_path):
    out = tmp_path / "run"
    result = run_cli(["train", "--dataset", "synthetic", "--limit", "300", "--epochs", "1",
                      "--out", out, "--no-progress", "--backend", "im2col", "--threads", "1"],
                     cwd=tmp_path, env=no_data_env(tmp_path))
    assert result.returncode == 0, result.stderr
    umask = os.umask(0)
    os.umask(umask)
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    for name in ("config.json", "meta.json", "checkpoint.npz", "model.npz", "history.json",
                 "result.json", "curves.png", "confusion.png", "misclassified.png"):
        assert name in names
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    json.loads((out / "history.json").read_text())


def test_resume_removes_stale_temporaries_and_repairs_history(tmp_path):
    out = tmp_path / "run"
    fit(small_config(), out, progress=False, log=None)
    stale = out / ".history.json.x1y2z3.tmp"
    stale.write_text("[{")
    good = json.loads((out / "history.json").read_text())
    messages = []
    # A kill between the checkpoint and history.json leaves history one epoch short ...
    (out / "history.json").write_text(json.dumps(good[:1]))
    fit(small_config(), out, resume=True, progress=False, log=messages.append)
    assert json.loads((out / "history.json").read_text()) == good
    assert not stale.exists()
    assert any("removed" in m for m in messages) and any("repaired" in m for m in messages)
    # ... and one written after the checkpoint it belongs with may be longer: cut back.
    (out / "history.json").write_text(json.dumps(good + [dict(good[-1], epoch=3)]))
    fit(small_config(), out, resume=True, progress=False, log=None)
    assert json.loads((out / "history.json").read_text()) == good


def test_refused_commands_leave_no_run_folder(tmp_path):
    env = no_data_env(tmp_path)
    cases = {
        "missing data set": (["--dataset", "mnist", "--data-dir", tmp_path / "nothing"], 1,
                             "not found"),
        "less than a batch": (["--dataset", "synthetic", "--limit", "40", "--batch-size", "64"],
                              1, "fewer than one batch"),
        "unknown model": (["--dataset", "synthetic", "--model", "alexnet"], 2, "alexnet"),
        "zero epochs": (["--dataset", "synthetic", "--epochs", "0"], 2, "--epochs"),
    }
    for name, (args, code, message) in cases.items():
        out = tmp_path / name.replace(" ", "-")
        result = run_cli(["train", *args, "--out", out, "--no-progress"], cwd=tmp_path, env=env)
        assert result.returncode == code, (name, result.stderr)
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, name
        assert not out.exists(), name


# ---------------------------------------------------------------------------------------------
# Kill test: SIGKILL at chosen moments, then --resume gives the uninterrupted run, bit for bit
# ---------------------------------------------------------------------------------------------
# Runs the CLI with os.fsync / os.replace wrapped so that the process SIGKILLs itself at the
# N-th matching moment: KILL_AT="writing:checkpoint.npz:1" dies after the temporary file is
# written but before it is synced and renamed; "written:checkpoint.npz:2" right after the
# second checkpoint is renamed into place.
KILLER = r"""
import os, signal, sys
when, target, nth = os.environ["KILL_AT"].split(":")
count = {"n": 0}
real_fsync, real_replace = os.fsync, os.replace

def hit():
    count["n"] += 1
    if count["n"] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)

def fsync(fd):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    if when == "writing" and name.startswith("." + target + "."):
        hit()
    real_fsync(fd)

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if when == "written" and os.path.basename(dst) == target:
        hit()

os.fsync, os.replace = fsync, replace
from minicnn.cli import main
sys.exit(main(sys.argv[1:]))
"""

TRAIN_ARGS = ["train", "--dataset", "synthetic", "--limit", "400", "--epochs", "3",
              "--batch-size", "32", "--seed", "4", "--backend", "im2col", "--threads", "1",
              "--no-progress"]


def train_killed_at(kill_at, out, cwd, env, resume):
    env = dict(env, KILL_AT=kill_at, PYTHONUNBUFFERED="1")   # output survives SIGKILL
    args = [*TRAIN_ARGS, "--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.run([sys.executable, "-c", KILLER, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def history_without_timing(path):
    return [{k: v for k, v in epoch.items()
             if k not in ("seconds", "step_seconds", "images_per_second")}
            for epoch in json.loads(path.read_text())]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_sigkill_at_any_write_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = no_data_env(tmp_path)
    full = tmp_path / "full"
    done = run_cli([*TRAIN_ARGS, "--out", full], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "killed"

    # 1. Killed while writing the first checkpoint: a temporary file, no checkpoint.
    r = train_killed_at("writing:checkpoint.npz:1", out, tmp_path, env, resume=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (out / "checkpoint.npz").exists()
    assert any(p.name.startswith(".checkpoint.npz.") for p in out.iterdir())

    # 2. Resumed (from the start), killed right after the epoch-2 checkpoint was renamed,
    #    before history.json was written: the history is one epoch behind.
    r = train_killed_at("written:checkpoint.npz:2", out, tmp_path, env, resume=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert "from the beginning" in r.stdout
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert int(minicnn.load(out / "checkpoint.npz")["progress.epoch"]) == 2

    # 3. Resumed, killed while writing history.json after epoch 3 (the 2nd history write:
    #    the 1st is the repair on resuming).
    r = train_killed_at("writing:history.json:2", out, tmp_path, env, resume=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert "repaired" in r.stdout
    assert len(json.loads((out / "history.json").read_text())) == 2

    # 4. Resumed with nothing in the way: same weights, bit for bit, and a complete history.
    r = run_cli([*TRAIN_ARGS, "--out", out, "--resume"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    expected, got = minicnn.load(full / "model.npz"), minicnn.load(out / "model.npz")
    assert expected.keys() == got.keys()
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key
    assert history_without_timing(out / "history.json") == \
        history_without_timing(full / "history.json")
    assert [e["epoch"] for e in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_config_is_named_not_a_traceback(tmp_path, capsys):
    from minicnn.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "synth')      # cut off mid-write
    (run / "model.npz").write_bytes(b"")
    for argv in (["train", "--out", str(run), "--resume"], ["evaluate", str(run)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "config.json is damaged" in err and "Traceback" not in err
