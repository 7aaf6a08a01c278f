"""The per-batch learning-rate schedules (``LambdaLR``, ``WarmupCosineLR``) follow PyTorch's, and
``fit`` steps ``warmup-cosine`` once per batch, resumably."""

import json
import math

import numpy as np
import pytest

from minicnn import nn, optim
from minicnn.train import SCHEDULES, TrainConfig, fit, make_optimizer, make_schedule

torch = pytest.importorskip("torch")


def _pair(lr=0.2):
    p, t = nn.Parameter(np.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return (optim.SGD([p], lr=lr, momentum=0.9), torch.optim.SGD([t], lr=lr, momentum=0.9))


def _rates(opt, sched, steps):
    """The rate before each of ``steps`` optimiser steps, and after the last."""
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    return np.array(rates)


def _torch_warmup_cosine(opt, total, warmup, start_factor, eta_min):
    lr_sched = torch.optim.lr_scheduler
    if warmup == 0:
        return lr_sched.CosineAnnealingLR(opt, T_max=total, eta_min=eta_min)
    return lr_sched.SequentialLR(
        opt, [lr_sched.LinearLR(opt, start_factor=start_factor, total_iters=warmup),
              lr_sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=eta_min)],
        milestones=[warmup])


@pytest.mark.parametrize("total, warmup, start_factor, eta_min", [
    (40, 6, 0.1, 0.0), (25, 1, 0.5, 0.01), (30, 0, 0.1, 0.0), (12, 11, 0.25, 0.0)])
def test_warmup_cosine_matches_torch_linear_then_cosine(total, warmup, start_factor, eta_min):
    ours, theirs = _pair()
    sched = optim.WarmupCosineLR(ours, total_steps=total, warmup_steps=warmup,
                                 start_factor=start_factor, eta_min=eta_min)
    t_sched = _torch_warmup_cosine(theirs, total, warmup, start_factor, eta_min)
    a, b = _rates(ours, sched, total), _rates(theirs, t_sched, total)
    # PyTorch's cosine is recursive, ours closed-form: equal to rounding.
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert a[-1] == pytest.approx(eta_min, abs=1e-15)


def test_warmup_cosine_matches_torch_lambda_lr_and_holds_after_the_end():
    total, warmup = 50, 8

    def factor(t):
        if t < warmup:
            return 0.1 + 0.9 * t / warmup
        return (1 + math.cos(math.pi * min((t - warmup) / (total - warmup), 1.0))) / 2

    ours, theirs = _pair(0.08)
    sched = optim.WarmupCosineLR(ours, total_steps=total, warmup_steps=warmup)
    t_sched = torch.optim.lr_scheduler.LambdaLR(theirs, factor)
    a, b = _rates(ours, sched, total + 10), _rates(theirs, t_sched, total + 10)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert np.all(a[total:] == 0.0)          # stays at eta_min, unlike CosineAnnealingLR
    assert a[0] == pytest.approx(0.008) and max(a) == pytest.approx(0.08)


def test_lambda_lr_matches_torch():
    ours, theirs = _pair()
    fn = lambda t: 0.95 ** t                                           # noqa: E731
    a = _rates(ours, optim.LambdaLR(ours, fn), 20)
    b = _rates(theirs, torch.optim.lr_scheduler.LambdaLR(theirs, fn), 20)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_warmup_cosine_state_round_trip_and_refusals():
    ours, _ = _pair()
    sched = optim.WarmupCosineLR(ours, total_steps=30, warmup_steps=5)
    for _ in range(11):
        sched.step()
    again, _ = _pair()
    other = optim.WarmupCosineLR(again, total_steps=30, warmup_steps=5)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == sched.get_last_lr()
    for bad in (dict(total_steps=0), dict(total_steps=5, warmup_steps=5),
                dict(total_steps=5, start_factor=0.0), dict(total_steps=5, eta_min=-1.0)):
        with pytest.raises(ValueError, match="WarmupCosineLR"):
            optim.WarmupCosineLR(ours, **bad)
    with pytest.raises(TypeError, match="LambdaLR"):
        optim.LambdaLR(ours, 0.5)


def test_make_schedule_warmup_cosine_covers_the_run_in_batches():
    config = TrainConfig(epochs=3, lr=0.1, warmup_epochs=0.5)
    optimizer = make_optimizer(config, [nn.Parameter(np.zeros(3))])
    schedule = make_schedule(config, optimizer, steps_per_epoch=20)
    assert isinstance(schedule, optim.WarmupCosineLR) and SCHEDULES["warmup-cosine"]
    assert (schedule.total_steps, schedule.warmup_steps) == (60, 10)
    assert optimizer.lr == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(schedule="onecycle").check()
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1.0).check()


def test_fit_steps_warmup_cosine_per_batch(tmp_path):
    config = TrainConfig(dataset="synthetic", model="lenet5", epochs=2, batch_size=32,
                         limit=320, test_limit=64, lr=0.05, warmup_epochs=0.5, seed=1,
                         backend="im2col")
    fit(config, tmp_path / "run", progress=False, log=None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    # 10 batches an epoch, 20 in all, 5 of warm-up: the rate at the end of epoch 1 is the
    # cosine's value after 10 steps (5 past the warm-up, of 15), and 0 at the end of the run.
    expected = 0.05 * (1 + math.cos(math.pi * 5 / 15)) / 2
    assert history[0]["lr"] == pytest.approx(expected)
    assert history[1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert all(0 < e["step_seconds"] <= e["seconds"] for e in history)
