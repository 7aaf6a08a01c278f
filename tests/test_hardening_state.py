"""State changes are all or nothing and behave as in PyTorch (issue 8, item 4):
``load_state_dict`` of modules and optimisers, attribute assignment on a ``Module``, ``.to()``,
``Sequential`` slices, optimiser hyper-parameters, ``grad = None``, and ``manual_seed``."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch

import minicnn
from minicnn import gradcheck, nn, optim
from assertions import raises

F32 = np.float32


def snapshot(module) -> dict[str, tuple]:
    """Bytes, dtype and shape of every parameter, gradient and buffer."""
    def raw(a):
        return None if a is None else (a.dtype.str, a.shape, a.tobytes())

    state = {}
    for name, param in module.named_parameters():
        state[name], state[name + ".grad"] = raw(param.data), raw(param.grad)
    for name, buf in module.named_buffers():
        state[name] = raw(np.asarray(buf))
    return state


def small_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8, 3, rng=1))


def trained_small_model():
    """A model whose grads and running statistics are not the initial ones."""
    model = small_model()
    x = np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(F32)
    y = model(x)
    model.backward(np.ones_like(y))
    return model


def good_state(model, rng):
    return {k: rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f"
            else np.array(5, v.dtype) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Module.load_state_dict: values are checked, all or nothing
# --------------------------------------------------------------------------------------------
BAD_VALUES = {
    "strings": np.array([["a", "b"] * 4] * 3),
    "objects": np.empty((3, 8), dtype=object),
    "complex": np.ones((3, 8), np.complex64),
    "ragged": [[1.0, 2.0], [3.0]],
    "datetimes": np.zeros((3, 8), "datetime64[s]"),
}


@pytest.mark.parametrize("kind", list(BAD_VALUES))
def test_a_non_numeric_value_is_refused_before_anything_is_written(kind, rng):
    """The bad key sorts *last* (4.weight): with a write-as-you-go loader every other
    parameter and buffer would already have changed."""
    model = trained_small_model()
    before = snapshot(model)
    state = good_state(model, rng)
    state["4.weight"] = BAD_VALUES[kind]
    raises(ValueError, lambda: model.load_state_dict(state), "load_state_dict", "4.weight",
           "unchanged")
    assert snapshot(model) == before


def test_nan_cannot_go_into_an_integer_buffer(rng):
    model = trained_small_model()
    before = snapshot(model)
    state = good_state(model, rng)
    state["1.num_batches_tracked"] = np.array(np.nan)
    raises(ValueError, lambda: model.load_state_dict(state), "1.num_batches_tracked", "NaN")
    assert snapshot(model) == before


def test_nan_bool_and_integer_values_load_into_float_parameters(rng):
    model = trained_small_model()
    state = good_state(model, rng)
    state["0.bias"] = np.array([np.nan, 1.0])
    state["1.weight"] = np.array([True, False])
    state["1.bias"] = np.array([3, -2], np.int64)
    model.load_state_dict(state)
    after = model.state_dict()
    assert np.isnan(after["0.bias"][0]) and after["0.bias"][1] == 1
    assert after["1.weight"].tolist() == [1.0, 0.0] and after["1.weight"].dtype == F32
    assert after["1.bias"].tolist() == [3.0, -2.0]


def test_load_state_dict_keeps_the_arrays_layers_hold(rng):
    """Values are copied into the existing arrays (an optimiser holding them sees them)."""
    model = trained_small_model()
    held = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    model.load_state_dict(good_state(model, rng))
    now = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    assert all(a is b for a, b in zip(held, now))


# --------------------------------------------------------------------------------------------
# Attribute assignment, as torch.nn.Module
# --------------------------------------------------------------------------------------------
def test_reassigning_a_buffer_keeps_it_registered_and_in_place():
    bn, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    bn.running_mean = np.full(3, 7.0, F32)
    theirs.running_mean = torch.full((3,), 7.0)
    assert list(bn.state_dict()) == list(theirs.state_dict())
    assert bn.state_dict()["running_mean"].tolist() == [7.0, 7.0, 7.0]


def test_assigning_an_array_to_a_parameter_name_is_a_type_error_as_in_torch():
    layer = nn.Linear(3, 2, rng=0)
    before = snapshot(layer)
    with pytest.raises(TypeError) as theirs:
        torch.nn.Linear(3, 2).weight = torch.zeros(2, 3)
    message = raises(TypeError, lambda: setattr(layer, "weight", np.zeros((2, 3), F32)),
                     "cannot assign 'numpy.ndarray' as parameter 'weight'",
                     "(Parameter or None expected)")
    assert str(theirs.value).split(" (")[0].replace("torch.FloatTensor", "numpy.ndarray") \
        == message.split(" (")[0]
    assert snapshot(layer) == before and isinstance(layer.weight, nn.Parameter)


def test_assigning_none_to_a_parameter_drops_it_as_in_torch():
    ours, theirs = nn.Linear(3, 2, rng=0), torch.nn.Linear(3, 2)
    ours.bias = None
    theirs.bias = None
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert len(ours.parameters()) == 1 and ours.bias is None
    ours.bias = nn.Parameter(np.zeros(2, F32))     # and a Parameter registers it again
    assert list(ours.state_dict()) == ["weight", "bias"]


def test_a_child_module_name_takes_only_a_module_or_none():
    model = small_model()
    raises(TypeError, lambda: setattr(model, "0", np.zeros(3)),
           "cannot assign 'numpy.ndarray' as child module '0'")
    model.__setattr__("4", None)
    assert "4.weight" not in model.state_dict() and "nn.Linear" not in repr(model)


def test_to_keeps_state_dict_key_order_and_registration():
    model = small_model()
    keys = list(model.state_dict())
    model.double()
    assert list(model.state_dict()) == keys
    assert model.state_dict()["1.running_mean"].dtype == np.float64
    assert model.state_dict()["1.num_batches_tracked"].dtype == np.int64
    model.float()
    assert list(model.state_dict()) == keys


def test_a_sequential_slice_keeps_the_original_names_as_in_torch():
    ours = small_model()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                 torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    for part in (slice(2, None), slice(1, 2), slice(None, None, 2)):
        assert list(ours[part].state_dict()) == list(theirs[part].state_dict()), part
        assert [n for n, _ in ours[part].named_modules()][1:] == \
               [n for n, _ in theirs[part].named_modules()][1:]
    tail = ours[1:]
    assert tail[0] is ours[1]                        # the same layers, shared
    x = np.random.default_rng(0).standard_normal((2, 2, 2, 2)).astype(F32)
    np.testing.assert_array_equal(tail(x), ours[4](ours[3](ours[2](ours[1](x)))))


def test_sequential_accepts_an_ordered_dict_like_torch():
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3, rng=0), act=nn.ReLU()))
    assert list(model.state_dict()) == ["conv.weight", "conv.bias"]


# --------------------------------------------------------------------------------------------
# grad = None
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1),
                                  lambda ps: optim.AdamW(ps, lr=0.1)],
                         ids=["sgd", "adam", "adamw"])
def test_optimisers_skip_parameters_whose_grad_is_none(make):
    model = nn.Linear(3, 2, rng=0)
    model.bias.grad = None
    model.weight.grad[...] = 1
    bias_before = model.bias.data.copy()
    weight_before = model.weight.data.copy()
    optimizer = make(model.parameters())
    optimizer.step()
    np.testing.assert_array_equal(model.bias.data, bias_before)
    assert not np.array_equal(model.weight.data, weight_before)
    assert 1 not in optimizer.state                 # no state made up for the skipped one


def test_backward_fills_a_none_grad_and_zero_grad_restores_zeros():
    layer = nn.Linear(3, 2, rng=0)
    layer.weight.grad = None
    layer.bias.grad = None
    y = layer(np.ones((4, 3), F32))
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(layer.bias.grad, [4.0, 4.0])
    assert layer.weight.grad.dtype == F32
    layer.bias.grad = None
    layer.zero_grad()
    np.testing.assert_array_equal(layer.bias.grad, [0.0, 0.0])


# --------------------------------------------------------------------------------------------
# Optimiser hyper-parameters, with torch's wording
# --------------------------------------------------------------------------------------------
def _params():
    return [nn.Parameter(np.zeros(3, F32))], [torch.nn.Parameter(torch.zeros(3))]


BAD_HYPERPARAMETERS = [
    ("SGD", dict(lr=-1)), ("SGD", dict(lr=0.1, momentum=-0.5)),
    ("SGD", dict(lr=0.1, weight_decay=-1e-4)), ("SGD", dict(lr=0.1, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    ("Adam", dict(lr=-0.001)), ("Adam", dict(eps=-1e-8)), ("Adam", dict(betas=(1.0, 0.999))),
    ("Adam", dict(betas=(0.9, -0.1))), ("Adam", dict(weight_decay=-1)),
    ("AdamW", dict(lr=-1)), ("AdamW", dict(betas=(0.9, 1.0))), ("AdamW", dict(weight_decay=-1)),
]


@pytest.mark.parametrize("name, kwargs", BAD_HYPERPARAMETERS,
                         ids=[f"{n}-{'-'.join(k)}" for n, k in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_are_refused_with_torchs_message(name, kwargs):
    ours, theirs = _params()
    with pytest.raises(ValueError) as torch_error:
        getattr(torch.optim, name)(theirs, **kwargs)
    raises(ValueError, lambda: getattr(optim, name)(ours, **kwargs), name,
           str(torch_error.value))


def test_a_bad_hyperparameter_in_a_param_group_is_refused():
    ours, _ = _params()
    raises(ValueError, lambda: optim.SGD([{"params": ours, "lr": -0.5}], lr=0.1),
           "Invalid learning rate: -0.5")


# --------------------------------------------------------------------------------------------
# Optimiser.load_state_dict: checked, all or nothing
# --------------------------------------------------------------------------------------------
def _stepped(make):
    rng = np.random.default_rng(0)
    params = [nn.Parameter(rng.standard_normal(s).astype(F32)) for s in [(4, 3), (3,)]]
    optimizer = make(params)
    for _ in range(2):
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape)
        optimizer.step()
    return optimizer


def _optimizer_snapshot(optimizer):
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    state = {i: {k: (np.asarray(v).dtype.str, np.asarray(v).tobytes()) for k, v in s.items()}
             for i, s in optimizer.state.items()}
    return repr(groups), state


OPTIMISERS = {"sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
              "adam": lambda ps: optim.Adam(ps, lr=0.01)}
BAD_OPTIMISER_STATES = {
    "wrong-shape": lambda s, k: s.update({f"state0.{k}": np.zeros((3, 4), F32)}),
    "unknown-state": lambda s, k: s.update({"state0.velocity": np.zeros((4, 3), F32)}),
    "no-such-param": lambda s, k: s.update({f"state7.{k}": np.zeros((4, 3), F32)}),
    "no-such-group": lambda s, k: s.update({"group3.lr": np.array(0.1)}),
    "unknown-hyper": lambda s, k: s.update({"group0.warp": np.array(9.0)}),
    "negative-lr": lambda s, k: s.update({"group0.lr": np.array(-1.0)}),
    "string": lambda s, k: s.update({"group0.lr": np.array("fast")}),
    "bad-name": lambda s, k: s.update({"momentum": np.array(0.5)}),
}


@pytest.mark.parametrize("opt", list(OPTIMISERS))
@pytest.mark.parametrize("bad", list(BAD_OPTIMISER_STATES))
def test_a_bad_optimiser_state_changes_nothing(opt, bad):
    optimizer = _stepped(OPTIMISERS[opt])
    source = _stepped(OPTIMISERS[opt])
    for p in source.param_groups[0]["params"]:
        p.grad[...] = 1
    source.step()                                    # different state, so a load would show
    state = source.state_dict()
    BAD_OPTIMISER_STATES[bad](state, "momentum_buffer" if opt == "sgd" else "exp_avg")
    before = _optimizer_snapshot(optimizer)
    raises(ValueError, lambda: optimizer.load_state_dict(state), "load_state_dict",
           "unchanged")
    assert _optimizer_snapshot(optimizer) == before


# --------------------------------------------------------------------------------------------
# manual_seed reaches layers that draw at run time
# --------------------------------------------------------------------------------------------
def test_manual_seed_governs_dropout_built_before_it():
    x = np.ones((4, 50), F32)
    early = nn.Dropout(0.5)
    minicnn.manual_seed(123)
    first = early(x)
    minicnn.manual_seed(123)
    again = early(x)
    minicnn.manual_seed(123)
    late = nn.Dropout(0.5)(x)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, late)
    minicnn.manual_seed(124)
    assert not np.array_equal(early(x), first)


def test_a_dropout_with_its_own_rng_ignores_manual_seed():
    x = np.ones((4, 50), F32)
    own = nn.Dropout(0.5, rng=7)
    minicnn.manual_seed(0)
    first = own(x)
    minicnn.manual_seed(0)
    assert not np.array_equal(own(x), first)         # its own stream moved on


def test_a_deep_copied_model_follows_manual_seed_too():
    x = np.ones((4, 50), F32)
    model = copy.deepcopy(nn.Sequential(nn.Dropout(0.5)))
    minicnn.manual_seed(5)
    first = model(x)
    minicnn.manual_seed(5)
    np.testing.assert_array_equal(model(x), first)


def test_gradcheck_replays_the_default_generator_for_dropout():
    layer = nn.Sequential(nn.Linear(4, 3, rng=0), nn.Dropout(0.5))
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert gradcheck(layer, x).passed()
