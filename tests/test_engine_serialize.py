"""NumPy-only state tests: .npz save/load, optimiser state round trips, initialiser
statistics and bit-for-bit repeatable seeding. (PyTorch comparisons: test_engine_state.py.)"""

from __future__ import annotations

import copy
import math
import os
import zipfile

import numpy as np
import pytest

import minicnn
from minicnn import init, nn, optim
from minicnn.kernels import BACKENDS

F32 = np.float32


def model_for(backend="im2col", rng=None, dropout_rng=None):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, backend=backend, rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend), nn.Flatten(), nn.Dropout(0.25, rng=dropout_rng),
        nn.Linear(4 * 3 * 3, 3, rng=rng))


def assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def trained(model, steps=2):
    x = np.random.default_rng(1).standard_normal((4, 1, 6, 6)).astype(F32)
    for _ in range(steps):
        model(x)
    return model


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    model = trained(model_for(rng=0))
    path = minicnn.save(model, tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and path.exists()
    with np.load(path, allow_pickle=False) as archive:   # plain arrays, no pickles
        raw = {key: archive[key] for key in archive.files}
    assert_same_state(raw, model.state_dict())
    assert_same_state(minicnn.load(path), model.state_dict())
    fresh = model_for(rng=1)
    assert minicnn.load(path, fresh) is fresh
    assert_same_state(fresh.state_dict(), model.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 1, 6, 6)).astype(F32)
    model.eval(), fresh.eval()
    np.testing.assert_array_equal(fresh(x), model(x))


def test_save_adds_the_npz_suffix_and_creates_folders(tmp_path):
    path = minicnn.save({"a": np.arange(3)}, tmp_path / "deep" / "er" / "weights")
    assert path.name == "weights.npz" and path.exists()
    np.testing.assert_array_equal(minicnn.load(path)["a"], np.arange(3))


def test_save_leaves_no_temporary_files(tmp_path):
    for _ in range(2):   # also when overwriting
        minicnn.save(model_for(rng=0), tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    """A crash mid-write must neither corrupt the previous file nor leave a temp file."""
    path = minicnn.save({"w": np.ones(3)}, tmp_path / "m.npz")
    good = path.read_bytes()

    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        minicnn.save({"w": np.zeros(3)}, path)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_save_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="'bad'"):
        minicnn.save({"bad": np.array([{"a": 1}], dtype=object)}, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file_gives_a_clear_error(tmp_path, keep):
    model = model_for(rng=0)
    path = minicnn.save(model, tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError) as info:
        minicnn.load(path)
    assert str(path) in str(info.value) and "npz" in str(info.value)
    before = model.state_dict()
    with pytest.raises(ValueError):
        minicnn.load(path, model)
    assert_same_state(model.state_dict(), before)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        minicnn.load(tmp_path / "nope.npz")


def test_load_into_a_different_architecture_fails_cleanly(tmp_path):
    path = minicnn.save(model_for(rng=0), tmp_path / "m.npz")
    other = nn.Sequential(nn.Conv2d(1, 4, 3, rng=0), nn.Flatten(), nn.Linear(4, 3, rng=0))
    before = other.state_dict()
    with pytest.raises(ValueError, match="unexpected keys"):
        minicnn.load(path, other)
    assert_same_state(other.state_dict(), before)
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deepcopy_of_a_model_that_has_run(backend):
    """``copy.deepcopy(model)`` (keeping the best checkpoint in memory, gradcheck) must work
    after forward/backward, and the copy must be independent of the original."""
    model = model_for(backend=backend, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(F32)
    model(x)
    model.backward(np.ones((2, 3), F32))
    clone = copy.deepcopy(model)
    assert_same_state(clone.state_dict(), model.state_dict())
    clone[0].weight.data[...] = 0
    assert model[0].weight.data.any()


# --------------------------------------------------------------------------------------------
# Optimiser state round trip
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.95), weight_decay=0.1),
    lambda p: optim.AdamW(p, lr=0.01),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("via_file", [False, True], ids=["dict", "npz"])
def test_optimiser_state_round_trip(make, via_file, tmp_path):
    """Resume from a saved optimiser state: the next steps are identical, bit for bit."""
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (3,)]
    grads = [[rng.standard_normal(s).astype(F32) for s in shapes] for _ in range(6)]
    params = [nn.Parameter(rng.standard_normal(s).astype(F32)) for s in shapes]
    opt = make(params)

    def step(optimizer, ps, gs):
        optimizer.zero_grad()
        for p, g in zip(ps, gs):
            p.grad += g
        optimizer.step()

    for gs in grads[:3]:
        step(opt, params, gs)
    state = opt.state_dict()
    if via_file:
        state = minicnn.load(minicnn.save(state, tmp_path / "opt.npz"))
    clones = [nn.Parameter(p.data.copy()) for p in params]
    resumed = make(clones)
    resumed.param_groups[0]["lr"] = 123.0          # must be overwritten by the load
    resumed.load_state_dict(state)
    for gs in grads[3:]:
        step(opt, params, gs)
        step(resumed, clones, gs)
        for p, q in zip(params, clones):
            np.testing.assert_array_equal(p.data, q.data)
    assert resumed.lr == opt.lr
    # and resuming really mattered: a fresh optimiser (no momentum / moments) differs
    fresh_params = [nn.Parameter(p.data.copy()) for p in params]
    step(make(fresh_params), fresh_params, grads[0])
    step(opt, params, grads[0])
    assert not np.array_equal(fresh_params[0].data, params[0].data)


def test_scheduler_state_round_trip():
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(5):
        sched.step()
    opt2 = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    sched2 = optim.StepLR(opt2, step_size=2, gamma=0.5)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr() == [0.25]


# --------------------------------------------------------------------------------------------
# Initialisers
# --------------------------------------------------------------------------------------------
def test_fan_in_and_fan_out():
    assert init.fan_in_and_fan_out((8, 4, 3, 5)) == (60, 120)
    assert init.fan_in_and_fan_out((10, 7)) == (7, 10)


@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Conv2d(16, 8, 3, rng=0), 16 * 9), (lambda: nn.Conv2d(8, 64, (3, 5), groups=4,
                                                                     rng=0), 2 * 15),
    (lambda: nn.Linear(300, 200, rng=0), 300),
], ids=["conv", "conv_groups", "linear"])
def test_default_init_bounds(make, fan_in):
    """PyTorch's default: weight and bias uniform within +-1/sqrt(fan_in)."""
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w, b = layer.weight.data, layer.bias.data
    assert w.dtype == b.dtype == F32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.95 * bound               # the whole range is used
    # uniform(-bound, bound): std bound/sqrt(3), sample std within a few 1/sqrt(2n)
    assert abs(w.std() * math.sqrt(3) / bound - 1) < 5 / math.sqrt(2 * w.size) + 0.01
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * w.size)


SHAPE = (128, 64, 3, 3)          # fan_in 576, fan_out 1152, 73,728 samples


@pytest.mark.parametrize("draw, expected_std", [
    (lambda r: init.kaiming_normal(SHAPE, r), math.sqrt(2 / 576)),
    (lambda r: init.kaiming_normal(SHAPE, r, mode="fan_out"), math.sqrt(2 / 1152)),
    (lambda r: init.kaiming_normal(SHAPE, r, a=0.2, nonlinearity="leaky_relu"),
     math.sqrt(2 / 1.04) / math.sqrt(576)),
    (lambda r: init.kaiming_uniform(SHAPE, r), math.sqrt(2 / 576)),
    (lambda r: init.xavier_normal(SHAPE, r), math.sqrt(2 / (576 + 1152))),
    (lambda r: init.xavier_uniform(SHAPE, r), math.sqrt(2 / (576 + 1152))),
    (lambda r: init.xavier_normal(SHAPE, r, gain=init.calculate_gain("tanh")),
     5 / 3 * math.sqrt(2 / (576 + 1152))),
], ids=["kaiming_normal", "kaiming_normal_fan_out", "kaiming_normal_leaky",
        "kaiming_uniform", "xavier_normal", "xavier_uniform", "xavier_normal_tanh"])
def test_initialiser_std(draw, expected_std):
    w = draw(np.random.default_rng(0))
    assert w.shape == SHAPE and w.dtype == F32
    # relative sampling error of a std estimate from n draws is ~1/sqrt(2n) = 0.0026 here
    assert abs(w.std() / expected_std - 1) < 0.015
    assert abs(w.mean()) < 5 * expected_std / math.sqrt(w.size)


def test_uniform_initialisers_respect_their_bound():
    r = np.random.default_rng(0)
    assert np.abs(init.xavier_uniform(SHAPE, r)).max() <= math.sqrt(6 / (576 + 1152))
    assert np.abs(init.kaiming_uniform(SHAPE, r)).max() <= math.sqrt(2) * math.sqrt(3 / 576)


def test_calculate_gain():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("sigmoid") == 1.0
    with pytest.raises(ValueError, match="swish"):
        init.calculate_gain("swish")


# --------------------------------------------------------------------------------------------
# Seeding and repeatability
# --------------------------------------------------------------------------------------------
def test_manual_seed_gives_identical_models():
    minicnn.manual_seed(0)
    first = model_for().state_dict()
    minicnn.manual_seed(0)
    second = model_for().state_dict()
    assert_same_state(first, second)
    minicnn.manual_seed(1)
    third = model_for().state_dict()
    assert not np.array_equal(first["0.weight"], third["0.weight"])
    # consecutive layers draw different weights from the one stream
    minicnn.manual_seed(0)
    a, b = nn.Linear(5, 5), nn.Linear(5, 5)
    assert not np.array_equal(a.weight.data, b.weight.data)


def test_int_seed_gives_identical_layers_without_global_state():
    a = nn.Conv2d(2, 3, 3, rng=7).weight.data
    saved = np.random.get_state()
    try:
        np.random.seed(123)                               # NumPy's global state is not used
        minicnn.manual_seed(99)
        b = nn.Conv2d(2, 3, 3, rng=7).weight.data
    finally:
        np.random.set_state(saved)
    np.testing.assert_array_equal(a, b)


def _train_once(backend):
    minicnn.manual_seed(0)
    model = model_for(backend=backend, dropout_rng=np.random.default_rng(5))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    data = np.random.default_rng(3)
    x = data.standard_normal((8, 1, 6, 6)).astype(F32)
    y = data.integers(0, 3, 8)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        losses.append(loss_fn(model(x), y))
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    return model.state_dict(), losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_training_is_bit_identical(backend):
    (state_a, losses_a), (state_b, losses_b) = _train_once(backend), _train_once(backend)
    assert losses_a == losses_b
    assert losses_a[-1] < losses_a[0]                     # it did train
    assert_same_state(state_a, state_b)
