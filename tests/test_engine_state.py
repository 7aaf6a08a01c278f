"""State dicts that move between minicnn and PyTorch, and optimisers / schedules that follow
PyTorch's update rules step for step. (NumPy-only state tests: test_engine_serialize.py.)"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

from minicnn import nn, optim  # noqa: E402
from torch_oracle import assert_close, to_numpy, to_torch, torch_basic_block  # noqa: E402

F32 = np.float32


def ours_cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5, rng=1))


def torch_cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 3 * 3, 5))


ARCHITECTURES = {
    "cnn": (ours_cnn, torch_cnn, (4, 3, 6, 6)),
    "basic_block_downsample": (lambda: nn.BasicBlock(3, 4, stride=2, rng=0),
                               lambda: torch_basic_block(3, 4, 2), (2, 3, 6, 6)),
    "basic_block_identity": (lambda: nn.BasicBlock(4, 4, rng=0),
                             lambda: torch_basic_block(4, 4, 1), (2, 4, 5, 5)),
}


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_state_dict_keys_and_shapes_equal_torch(arch):
    make_ours, make_theirs, _ = ARCHITECTURES[arch]
    ours, theirs = make_ours().state_dict(), make_theirs().state_dict()
    assert list(ours) == list(theirs)
    assert shapes(ours) == shapes(theirs)
    for key, value in ours.items():
        assert np.dtype(value.dtype) == np.dtype(to_numpy(theirs[key]).dtype), key


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_our_state_dict_loads_into_torch(arch, rng):
    make_ours, make_theirs, shape = ARCHITECTURES[arch]
    ours, theirs = make_ours(), make_theirs()
    for _ in range(3):   # move the running statistics away from their initial values
        ours(rng.standard_normal(shape).astype(F32) + 0.5)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal(shape).astype(F32)
    ours.eval(), theirs.eval()
    assert_close(ours(x), to_numpy(theirs(to_torch(x))), "eval output after loading into torch")
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), ours.state_dict()[key], err_msg=key)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_torch_state_dict_loads_into_ours(arch, rng):
    make_ours, make_theirs, shape = ARCHITECTURES[arch]
    ours, theirs = make_ours(), make_theirs()
    theirs.train()
    with torch.no_grad():
        for _ in range(3):
            theirs(to_torch(rng.standard_normal(shape).astype(F32) + 0.5))
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], to_numpy(value), err_msg=key)
    x = rng.standard_normal(shape).astype(F32)
    for training in (False, True):
        ours.train(training), theirs.train(training)
        with torch.no_grad():
            expected = to_numpy(theirs(to_torch(x)))
        assert_close(ours(x), expected, f"output (training={training})")


# --------------------------------------------------------------------------------------------
# Optimisers: same parameters, same gradients, same updates
# --------------------------------------------------------------------------------------------
OPTIMISERS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "sgd_momentum_dampening": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.3),
                               lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                                         dampening=0.3)),
    "sgd_nesterov": (lambda p: optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "sgd_weight_decay": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                                   weight_decay=0.01)),
    "sgd_nesterov_weight_decay": (
        lambda p: optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1)),
    "adam": (lambda p: optim.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam_betas_eps": (lambda p: optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
                       lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    "adam_weight_decay": (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1),
                          lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
    "adamw_weight_decay": (lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.3),
                           lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", OPTIMISERS)
def test_optimiser_matches_torch(name, dtype, rng):
    make_ours, make_theirs = OPTIMISERS[name]
    shapes_ = [(3, 2, 3, 3), (3,), (4, 5)]
    ours = [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes_]
    theirs = [torch.nn.Parameter(to_torch(p.data)) for p in ours]
    opt, t_opt = make_ours(ours), make_theirs(theirs)
    for step in range(6):
        grads = [rng.standard_normal(s).astype(dtype) * (step + 1) for s in shapes_]
        opt.zero_grad()
        t_opt.zero_grad()
        for p, t, g in zip(ours, theirs, grads):
            p.grad += g
            t.grad = to_torch(g)
        opt.step()
        t_opt.step()
        for i, (p, t) in enumerate(zip(ours, theirs)):
            assert p.data.dtype == dtype
            assert_close(p.data, to_numpy(t), f"{name}: param {i} after step {step + 1}", dtype)


def test_optimiser_param_groups_match_torch(rng):
    a, b = (rng.standard_normal((3, 3)), rng.standard_normal(4))
    ours = [nn.Parameter(a.copy()), nn.Parameter(b.copy())]
    theirs = [torch.nn.Parameter(to_torch(a)), torch.nn.Parameter(to_torch(b))]
    opt = optim.SGD([{"params": [ours[0]]}, {"params": [ours[1]], "lr": 0.5}], lr=0.1,
                    momentum=0.9)
    t_opt = torch.optim.SGD([{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.5}],
                            lr=0.1, momentum=0.9)
    for _ in range(3):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad[...] = g
            t.grad = to_torch(g)
        opt.step()
        t_opt.step()
    for p, t in zip(ours, theirs):
        assert_close(p.data, to_numpy(t), "param groups")


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------
SCHEDULES = {
    "step_lr": (lambda o: optim.StepLR(o, step_size=3, gamma=0.5),
                lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 10),
    "step_lr_every_epoch": (lambda o: optim.StepLR(o, step_size=1, gamma=0.9),
                            lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.9), 8),
    "cosine": (lambda o: optim.CosineAnnealingLR(o, T_max=8),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8), 8),
    "cosine_eta_min": (lambda o: optim.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
                       lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5,
                                                                            eta_min=0.01), 5),
}


def run_schedule(make_ours, make_theirs, epochs):
    p, t = nn.Parameter(np.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt, t_opt = optim.SGD([p], lr=0.2, momentum=0.9), torch.optim.SGD([t], lr=0.2, momentum=0.9)
    sched, t_sched = make_ours(opt), make_theirs(t_opt)
    ours, theirs = [sched.get_last_lr()[0]], [t_sched.get_last_lr()[0]]
    for _ in range(epochs):
        opt.step(), t_opt.step()
        sched.step(), t_sched.step()
        ours.append(sched.get_last_lr()[0])
        theirs.append(t_sched.get_last_lr()[0])
        assert opt.lr == ours[-1]
    return np.array(ours), np.array(theirs)


@pytest.mark.parametrize("name", SCHEDULES)
def test_lr_schedule_matches_torch(name):
    ours, theirs = run_schedule(*SCHEDULES[name])
    assert_close(ours, theirs, name, np.float64)
    assert len(set(np.round(ours, 12))) > 2    # the rate really changed


def test_cosine_annealing_past_t_max_matches_torch():
    """PyTorch's CosineAnnealingLR keeps following the cosine after T_max (the rate climbs
    back towards the initial one over the next T_max epochs); it does not stay at eta_min."""
    ours, theirs = run_schedule(lambda o: optim.CosineAnnealingLR(o, T_max=4, eta_min=0.01),
                                lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
                                    o, T_max=4, eta_min=0.01), 12)
    assert_close(ours, theirs, "cosine past T_max", np.float64)


# --------------------------------------------------------------------------------------------
# Default initialisation follows PyTorch's
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ours, theirs", [
    (lambda: nn.Conv2d(16, 8, 3, rng=0), lambda: torch.nn.Conv2d(16, 8, 3)),
    (lambda: nn.Conv2d(16, 32, (3, 5), groups=4, rng=0),
     lambda: torch.nn.Conv2d(16, 32, (3, 5), groups=4)),
    (lambda: nn.Linear(300, 200, rng=0), lambda: torch.nn.Linear(300, 200)),
], ids=["conv", "conv_groups", "linear"])
def test_default_init_distribution_matches_torch(ours, theirs):
    """Same bounds (uniform within 1/sqrt(fan_in), weight and bias) and the same spread as
    PyTorch's default init, compared with a torch module drawn independently."""
    torch.manual_seed(0)
    ours, theirs = ours(), theirs()
    for name in ("weight", "bias"):
        a = getattr(ours, name).data
        b = to_numpy(getattr(theirs, name))
        fan_in = int(np.prod(ours.weight.shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(a).max() <= bound and np.abs(b).max() <= bound * (1 + 1e-6)
        if a.size >= 1000:   # enough samples for the spread to be meaningful
            assert np.abs(a).max() > 0.95 * bound
            # uniform(-b, b) has std b/sqrt(3); the sample std of n draws varies by ~1/sqrt(n)
            assert abs(a.std() / b.std() - 1) < 0.06
            assert abs(a.std() * np.sqrt(3) / bound - 1) < 0.04
