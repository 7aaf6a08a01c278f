"""The command line refuses nonsense while parsing (exit 2, one line), says what a resumed run
keeps, and the training policies do exactly what they say (Nesterov only when asked, AdamW's
weight decay of 0 stays 0, an explicit step schedule, no silent empty epochs)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minicnn import nn
from minicnn.cli import build_parser, main
from minicnn.train import TrainConfig, TrainingError, fit, make_optimizer, make_schedule

SYNTHETIC = ["--dataset", "synthetic", "--backend", "im2col", "--threads", "1",
             "--no-progress", "--batch-size", "32"]


def refused(argv, capsys):
    """Run ``main(argv)``; assert a parse-time refusal and return its stderr."""
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err                     # one line
    return err


@pytest.mark.parametrize("argv, option", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "two"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--limit", "-5"], "--limit"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--weight-decay", "-1e-4"], "--weight-decay"),
    (["train", "--step-size", "0"], "--step-size"),
    (["train", "--val-size", "-1"], "--val-size"),
    (["train", "--warmup-epochs", "-0.5"], "--warmup-epochs"),
    (["train", "--schedule", "onecycle"], "--schedule"),
    (["evaluate", "run", "--batch-size", "0"], "--batch-size"),
    (["predict", "run", "x.png", "--top", "0"], "--top"),
    (["train", "--threads", "0"], "--threads"),
])
def test_out_of_range_values_are_refused_at_parse_time(argv, option, capsys):
    err = refused(argv, capsys)
    assert option in err and "Traceback" not in err


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    err = refused(["train", "--out", str(existing)], capsys)
    assert "is a file" in err
    assert existing.read_text() == "keep me"


def test_more_threads_than_cores_is_a_warning_and_a_cap(capsys):
    args = build_parser().parse_args(["train", "--threads", "100000"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert args.threads == cores
    assert "warning" in capsys.readouterr().err


def test_quick_writes_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *SYNTHETIC, "--quick", "--limit", "300"]) == 0
    assert (tmp_path / "runs" / "synthetic-lenet5-quick" / "model.npz").exists()
    assert not (tmp_path / "runs" / "synthetic-lenet5").exists()


def test_resume_extends_a_finished_run_and_says_what_it_ignores(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", *SYNTHETIC, "--limit", "300", "--out", str(out)]
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    # Without --resume the folder is protected.
    assert main([*base, "--epochs", "1"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--resume", "--epochs", "2", "--lr", "0.3", "--model",
                 "mnist-cnn"]) == 0
    text = capsys.readouterr().out
    assert "resuming with the stored settings" in text and "model=lenet5" in text
    ignored = next(line for line in text.splitlines() if line.startswith("ignored on resume"))
    assert "--lr 0.3 (keeps 0.05)" in ignored and "--model mnist-cnn (keeps lenet5)" in ignored
    assert "--epochs" not in ignored
    assert [e["epoch"] for e in json.loads((out / "history.json").read_text())] == [1, 2]
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


def test_output_into_a_closed_pipe_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)                   # the reader is gone before anything is written
    try:
        result = subprocess.run([sys.executable, "-m", "minicnn", "datasets"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                check=False)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141


# ---------------------------------------------------------------------------------------------
# Training policies
# ---------------------------------------------------------------------------------------------
def parameters():
    return nn.Linear(3, 2, rng=0).parameters()


def test_sgd_uses_nesterov_only_when_asked():
    assert make_optimizer(TrainConfig(momentum=0.9), parameters()).param_groups[0][
        "nesterov"] is False
    assert make_optimizer(TrainConfig(momentum=0.9, nesterov=True), parameters()).param_groups[
        0]["nesterov"] is True
    args = build_parser().parse_args(["train", "--nesterov"])
    assert args.nesterov is True


def test_adamw_weight_decay_zero_stays_zero_and_the_cli_default_is_documented():
    group = make_optimizer(TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.0),
                           parameters()).param_groups[0]
    assert group["weight_decay"] == 0.0
    from minicnn.cli import config_from_args
    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--optimizer", "adamw"])) \
        .weight_decay == 1e-2
    assert config_from_args(parser.parse_args(
        ["train", "--optimizer", "adamw", "--weight-decay", "0"])).weight_decay == 0.0
    assert config_from_args(parser.parse_args(["train"])).weight_decay == 5e-4
    assert config_from_args(parser.parse_args(
        ["train", "--weight-decay", "0"])).weight_decay == 0.0
    assert config_from_args(parser.parse_args(["train", "--optimizer", "adam"])) \
        .weight_decay == 0.0
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "0.01 for adamw" in help_text and "0.0005 for sgd" in help_text


def test_the_default_recipe_is_the_documented_one():
    """``minicnn train`` trains on the whole training split with SGD 0.05, Nesterov momentum
    0.9, weight decay 5e-4, the per-batch warm-up + cosine schedule and augmented
    images (README)."""
    from minicnn.cli import config_from_args
    parser = build_parser()
    config = config_from_args(parser.parse_args(["train", "--model", "mnist-cnn"]))
    assert (config.optimizer, config.lr, config.momentum, config.nesterov) == (
        "sgd", 0.05, 0.9, True)
    assert (config.weight_decay, config.schedule, config.warmup_epochs) == (
        5e-4, "warmup-cosine", 0.2)
    assert config.val_size == 0 and config.seed == 0 and config.epochs == 5
    assert config.augment is True
    assert config_from_args(parser.parse_args(["train", "--no-augment"])).augment is False
    assert config_from_args(parser.parse_args(["train", "--no-nesterov"])).nesterov is False
    # Where Nesterov momentum does not exist the default does not ask for it.
    for argv in (["--optimizer", "adam"], ["--optimizer", "adamw"], ["--momentum", "0"]):
        other = config_from_args(parser.parse_args(["train", *argv]))
        assert other.nesterov is False
        other.check()
    asked = config_from_args(parser.parse_args(
        ["train", "--val-size", "5000", "--schedule", "cosine", "--warmup-epochs", "0.5"]))
    assert (asked.val_size, asked.schedule, asked.warmup_epochs) == (5000, "cosine", 0.5)
    assert config_from_args(parser.parse_args(["train", "--quick"])).val_size == 500


def test_step_schedule_uses_the_given_step_size_and_gamma():
    config = TrainConfig(schedule="step", step_size=2, gamma=0.5, lr=0.8, epochs=10)
    optimizer = make_optimizer(config, parameters())
    schedule = make_schedule(config, optimizer)
    rates = []
    for _ in range(5):
        rates.append(optimizer.lr)
        schedule.step()
    assert np.allclose(rates, [0.8, 0.8, 0.4, 0.4, 0.2])


def test_configs_written_before_the_explicit_policies_keep_theirs():
    old = json.dumps({"optimizer": "sgd", "momentum": 0.9, "epochs": 9, "schedule": "step"})
    config = TrainConfig.from_json(old)
    assert config.nesterov is True and config.step_size == 3
    assert TrainConfig.from_json(TrainConfig().to_json()).nesterov is False


def test_a_training_set_smaller_than_one_batch_is_refused_before_training(tmp_path):
    config = TrainConfig(dataset="synthetic", limit=60, batch_size=64, backend="im2col")
    with pytest.raises(TrainingError, match="fewer than one batch of 64"):
        fit(config, tmp_path / "run", progress=False, log=None)
    assert not (tmp_path / "run").exists()


def test_the_first_slow_step_is_reported_as_compile_time_once():
    from minicnn.train import _CompileTimer

    timer = _CompileTimer(enabled=True)
    messages = [timer.record(s) for s in (2.6, 0.1, 0.1, 0.1, 3.0)]
    assert messages[:3] == [None, None, None] and messages[4] is None
    assert messages[3] == "compiled kernels in 2.5 s (cached for later runs)"
    warm = _CompileTimer(enabled=True)
    assert [warm.record(s) for s in (0.2, 0.1, 0.1, 0.1)] == [None] * 4
    short_epoch = _CompileTimer(enabled=True)          # fewer steps than it likes to see
    assert short_epoch.record(5.0) is None and short_epoch.record(0.2) is None
    assert short_epoch.finish().startswith("compiled kernels in 4.8 s")
    assert short_epoch.finish() is None                 # once


def test_name_list_keeps_order_drops_repeats_and_names_the_problem():
    import argparse

    from minicnn.argtypes import name_list

    allowed = ("numba", "torch", "im2col")
    assert name_list("torch, numba,torch", allowed, "backend(s)", "numba") == ("torch", "numba")
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown backend\(s\) 'cuda'"):
        name_list("numba,cuda", allowed, "backend(s)", "numba")
    with pytest.raises(argparse.ArgumentTypeError, match="empty name.*e.g. numba"):
        name_list("numba,,torch", allowed, "backend(s)", "numba")
