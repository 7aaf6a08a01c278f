"""Hardening of the engine's public API (issue 8, items 2-5), tested from the outside:

- every ``backward`` checks ``dy`` (shape, floating dtype) before touching any state;
- a second ``backward`` on one forward is allowed: same ``dx``, gradients added again;
- inputs the engine does not compute in are refused (or converted) the same way by every
  layer and backend; an empty batch flows through every layer;
- max-pooling ties (``-inf``, padding, NaN) resolve as in PyTorch, in every backend.

State changes (load_state_dict, attribute assignment, optimisers, seeding) are in
``test_hardening_state.py``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from minicnn import kernels, nn
from assertions import raises

BACKENDS = kernels.BACKENDS
F32 = np.float32


# --------------------------------------------------------------------------------------------
# Every layer, built for a backend: (id, factory(backend), input shape without the batch)
# --------------------------------------------------------------------------------------------
KERNEL_LAYERS = [
    ("Conv2d", lambda b: nn.Conv2d(3, 4, 3, padding=1, backend=b, rng=0), (3, 6, 6)),
    ("Conv2d-depthwise", lambda b: nn.Conv2d(4, 4, 3, groups=4, backend=b, rng=0), (4, 6, 6)),
    ("MaxPool2d", lambda b: nn.MaxPool2d(2, backend=b), (3, 6, 6)),
    ("MaxPool2d-padded", lambda b: nn.MaxPool2d(3, 2, 1, backend=b), (3, 6, 6)),
    ("AvgPool2d", lambda b: nn.AvgPool2d(2, backend=b), (3, 6, 6)),
    ("AvgPool2d-padded", lambda b: nn.AvgPool2d(3, 2, 1, count_include_pad=False, backend=b),
     (3, 6, 6)),
    ("BasicBlock", lambda b: nn.BasicBlock(3, 4, stride=2, backend=b, rng=0), (3, 6, 6)),
    ("Sequential", lambda b: nn.Sequential(
        nn.Conv2d(3, 2, 3, backend=b, rng=0), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2,
        backend=b), nn.Flatten(), nn.Linear(8, 3, rng=1), nn.Dropout(0.3, rng=2)), (3, 6, 6)),
]
PLAIN_LAYERS = [
    ("AdaptiveAvgPool2d", lambda b: nn.AdaptiveAvgPool2d(2), (3, 5, 5)),
    ("AdaptiveAvgPool2d-global", lambda b: nn.AdaptiveAvgPool2d(1), (3, 5, 5)),
    ("Linear", lambda b: nn.Linear(5, 2, rng=0), (5,)),
    ("Flatten", lambda b: nn.Flatten(), (3, 2, 2)),
    ("ReLU", lambda b: nn.ReLU(), (3, 4)),
    ("LeakyReLU", lambda b: nn.LeakyReLU(0.1), (3, 4)),
    ("Sigmoid", lambda b: nn.Sigmoid(), (3, 4)),
    ("Tanh", lambda b: nn.Tanh(), (3, 4)),
    ("Dropout", lambda b: nn.Dropout(0.5, rng=0), (3, 4)),
    ("BatchNorm1d", lambda b: nn.BatchNorm1d(3), (3,)),
    ("BatchNorm1d-3d", lambda b: nn.BatchNorm1d(3), (3, 4)),
    ("BatchNorm2d", lambda b: nn.BatchNorm2d(3), (3, 2, 2)),
]
# Layers that use a kernel backend run in all three; the others once (their backend is NumPy).
CASES = ([pytest.param(make, shape, backend, id=f"{name}-{backend}")
          for name, make, shape in KERNEL_LAYERS for backend in BACKENDS]
         + [pytest.param(make, shape, None, id=name) for name, make, shape in PLAIN_LAYERS])


def layer_name(layer) -> str:
    return type(layer).__name__


def snapshot(module) -> dict[str, tuple]:
    """Bytes, dtype and shape of every parameter, gradient and buffer (None when absent)."""
    def raw(a):
        return None if a is None else (a.dtype.str, a.shape, a.tobytes())

    state = {}
    for name, param in module.named_parameters():
        state[name] = raw(param.data)
        state[name + ".grad"] = raw(param.grad)
    for name, buf in module.named_buffers():
        state[name] = raw(np.asarray(buf))
    return state


def ran(make, shape, backend, batch=2, dtype=F32, mode="train"):
    """A layer after one forward on a seeded input; returns (layer, x, y)."""
    layer = make(backend)
    getattr(layer, mode)()
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(dtype)
    return layer, x, layer(x)


def wrong_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """dy shapes that must be refused for an output of ``shape``: another batch size, another
    size in the last axis, one axis more and one axis less."""
    bigger_batch = (shape[0] + 1, *shape[1:])
    other_last = (*shape[:-1], shape[-1] + 1)
    return [bigger_batch, other_last, (*shape, 1), shape[:-1]]


# --------------------------------------------------------------------------------------------
# 2. backward validates dy before touching any state
# --------------------------------------------------------------------------------------------
def test_the_maxpool_segfault_from_the_issue_is_a_value_error():
    pool = nn.MaxPool2d(2)                            # default backend: numba
    pool(np.zeros((2, 3, 6, 6), F32))
    message = raises(ValueError, lambda: pool.backward(np.zeros((3, 3, 3, 3), F32)),
                     "MaxPool2d.backward", "(2, 3, 3, 3)", "(3, 3, 3, 3)")
    assert message == ("MaxPool2d.backward: expected dy of shape (2, 3, 3, 3) (the forward "
                       "output), got (3, 3, 3, 3)")


@pytest.mark.parametrize("make, shape, backend", CASES)
def test_a_wrong_dy_shape_is_refused_and_changes_nothing(make, shape, backend):
    layer, x, y = ran(make, shape, backend)
    twin = copy.deepcopy(layer)                      # what the layer was before the bad calls
    before = snapshot(layer)
    for bad in wrong_shapes(y.shape):
        raises(ValueError, lambda: layer.backward(np.ones(bad, F32)),
               f"{layer_name(layer)}.backward", f"expected dy of shape {y.shape}", str(bad))
        assert snapshot(layer) == before
    # What forward remembered is intact too: a good backward still gives the twin's answer.
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(F32)
    np.testing.assert_array_equal(layer.backward(dy), twin.backward(dy))
    assert snapshot(layer) == snapshot(twin)


@pytest.mark.parametrize("make, shape, backend", CASES)
@pytest.mark.parametrize("bad", [np.int32, np.bool_, np.complex64, list],
                         ids=["int32", "bool", "complex64", "list"])
def test_a_non_floating_dy_is_a_type_error_and_changes_nothing(make, shape, backend, bad):
    layer, x, y = ran(make, shape, backend)
    before = snapshot(layer)
    dy = np.ones(y.shape).tolist() if bad is list else np.ones(y.shape, bad)
    raises(TypeError, lambda: layer.backward(dy), f"{layer_name(layer)}.backward",
           "list" if bad is list else str(np.dtype(bad)))
    assert snapshot(layer) == before


@pytest.mark.parametrize("make, shape, backend", CASES)
@pytest.mark.parametrize("dy_dtype", [np.float64, ">f4", np.float16],
                         ids=["float64", "big-endian", "float16"])
def test_a_dy_of_another_float_dtype_is_converted_to_the_output_dtype(make, shape, backend,
                                                                      dy_dtype):
    layer, x, y = ran(make, shape, backend)
    twin = copy.deepcopy(layer)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dy_dtype)
    dx = layer.backward(dy)
    assert dx.dtype == np.float32 and dx.dtype.isnative
    np.testing.assert_array_equal(dx, twin.backward(dy.astype(F32)))
    assert snapshot(layer) == snapshot(twin)


@pytest.mark.parametrize("make, shape, backend", CASES)
def test_backward_before_forward_is_refused_by_every_layer(make, shape, backend):
    layer = make(backend)
    raises(RuntimeError, lambda: layer.backward(np.ones((2, 3), F32)),
           layer_name(layer), "before forward")


@pytest.mark.parametrize("make, shape, backend", CASES)
def test_a_second_backward_gives_the_same_dx_and_accumulates_again(make, shape, backend):
    """Documented behaviour (minicnn.nn.module): backward may run again on one forward --
    timing a backward pass on its own relies on it -- and it is deterministic."""
    layer, x, y = ran(make, shape, backend)
    layer.zero_grad()
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(F32)
    first = layer.backward(dy)
    once = {n: p.grad.copy() for n, p in layer.named_parameters()}
    second = layer.backward(dy)
    np.testing.assert_array_equal(second, first)
    for name, param in layer.named_parameters():
        np.testing.assert_array_equal(param.grad, once[name] + once[name], err_msg=name)


def test_a_loss_backward_takes_no_dy_and_a_model_validates_the_loss_gradient():
    model = nn.Sequential(nn.Linear(4, 3, rng=0))
    logits = model(np.ones((2, 4), F32))
    loss = nn.CrossEntropyLoss()
    loss(logits, np.array([0, 2]))
    model.backward(loss.backward())                   # the right shape: fine
    raises(ValueError, lambda: model.backward(loss.backward()[:1]),
           "Sequential.backward", "(2, 3)", "(1, 3)")


# --------------------------------------------------------------------------------------------
# 3. dtypes and layouts the engine does not compute in; empty batches
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, shape, backend", CASES)
@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.int32, np.uint8, np.bool_,
                                   np.complex64],
                         ids=["float16", "longdouble", "int32", "uint8", "bool", "complex64"])
def test_dtypes_outside_float32_and_float64_are_refused(make, shape, backend, dtype):
    layer = make(backend)
    x = np.ones((2, *shape), dtype)
    # A model's error comes from its first layer, a Conv2d in both composite cases.
    first = {"Sequential": "Conv2d", "BasicBlock": "Conv2d"}.get(layer_name(layer),
                                                                 layer_name(layer))
    raises(TypeError, lambda: layer(x), f"{first}:", "float32 or float64", str(np.dtype(dtype)),
           "astype(np.float32)")


@pytest.mark.parametrize("make, shape, backend", CASES)
@pytest.mark.parametrize("dtype", [F32, np.float64])
def test_big_endian_and_strided_inputs_give_the_native_answer(make, shape, backend, dtype):
    """Big-endian input is converted to native order (same precision); Fortran-ordered and
    non-contiguous views are computed as they are. Every variant matches the C-ordered,
    native result, and so does its backward."""
    layer, x, y = ran(make, shape, backend, dtype=dtype)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    strided = np.empty((2, *shape[:-1], 2 * shape[-1]), dtype)[..., ::2]
    strided[...] = x
    for variant in (x.astype(x.dtype.newbyteorder(">")), np.asfortranarray(x), strided):
        twin = make(backend)
        y2 = twin(variant)
        assert y2.dtype == dtype and y2.dtype.isnative
        np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(twin.backward(dy), dx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, shape, backend", CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_an_empty_batch_flows_through_every_layer(make, shape, backend, mode):
    """As in PyTorch: an empty output of the right shape, an empty dx, zero parameter
    gradients, running statistics untouched -- and no warning, no crash in any kernel."""
    layer, _, y_full = ran(make, shape, backend, mode=mode)
    layer = make(backend)
    getattr(layer, mode)()
    layer.zero_grad()
    before = {n: np.asarray(b).copy() for n, b in layer.named_buffers()
              if not n.endswith("num_batches_tracked")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer(np.zeros((0, *shape), F32))
        assert y.shape == (0, *y_full.shape[1:]) and y.dtype == F32
        dx = layer.backward(np.zeros(y.shape, F32))
    assert dx.shape == (0, *shape) and dx.dtype == F32
    for name, param in layer.named_parameters():
        assert not param.grad.any(), name
    for name, value in before.items():
        np.testing.assert_array_equal(dict(layer.named_buffers())[name], value, err_msg=name)


@pytest.mark.parametrize("ours, theirs, shape", [
    (nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3), (0, 3, 2, 2)),
    (nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3), (0, 3)),
], ids=["bn2d", "bn1d"])
def test_an_empty_batch_counts_in_num_batches_tracked_as_in_torch(ours, theirs, shape):
    ours(np.zeros(shape, F32))
    theirs(torch.zeros(shape))
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 1


@pytest.mark.parametrize("loss, prediction, target", [
    (nn.CrossEntropyLoss(), np.zeros((0, 5), F32), np.zeros(0, np.int64)),
    (nn.MSELoss(), np.zeros((0, 3), F32), np.zeros((0, 3), F32)),
], ids=["ce", "mse"])
def test_losses_on_an_empty_batch_are_nan_as_in_torch(loss, prediction, target):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss(prediction, target)
        grad = loss.backward()
    assert np.isnan(value) and grad.shape == prediction.shape and grad.dtype == F32
    torch_loss = getattr(torch.nn, type(loss).__name__)()
    assert torch.isnan(torch_loss(torch.from_numpy(prediction), torch.from_numpy(target)))


@pytest.mark.parametrize("loss, target", [(nn.CrossEntropyLoss(), np.array([0, 1])),
                                          (nn.MSELoss(), np.zeros((2, 3)))], ids=["ce", "mse"])
def test_losses_refuse_float16_like_the_layers(loss, target):
    raises(TypeError, lambda: loss(np.zeros((2, 3), np.float16), target),
           type(loss).__name__, "float16", "float32 or float64")


# --------------------------------------------------------------------------------------------
# 5. max-pooling ties: -inf, padding, NaN -- every backend against each other and torch
# --------------------------------------------------------------------------------------------
def _tie_inputs():
    ninf, nan = -np.inf, np.nan
    mixed = np.random.default_rng(0).choice([ninf, 0.0, 1.0, nan], size=(2, 2, 5, 6))
    ties = np.random.default_rng(1).choice([ninf, 0.0, 1.0], size=(2, 2, 5, 6))
    return {
        "all-inf": np.full((1, 2, 4, 4), ninf),
        "inf-corner": np.array([[[[ninf, ninf, 3], [ninf, ninf, 3], [2, 2, 2]]]]),
        "two-nans": np.array([[[[1, nan], [nan, 2]]]]),
        "nans-and-inf": np.array([[[[1, nan, 3], [nan, ninf, 5], [ninf, 1, 1]]]]),
        "ties": ties, "mixed": mixed,
    }


TIE_INPUTS = _tie_inputs()
POOLS = [(2, 2, 0), (2, 1, 0), (3, 1, 1), (3, 2, 1), (2, 2, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, np.float64])
@pytest.mark.parametrize("name", list(TIE_INPUTS))
@pytest.mark.parametrize("kernel, stride, padding", POOLS,
                         ids=[f"k{k}s{s}p{p}" for k, s, p in POOLS])
def test_maxpool_ties_pick_the_position_torch_picks(backend, dtype, name, kernel, stride,
                                                    padding):
    """Forward value and the input cell the gradient goes to, against torch's CPU kernel:
    the first largest real cell wins (padding never does, even against a window of -inf),
    and in a window with NaNs the last NaN wins. Each output's gradient is distinct (1, 2,
    3, ...), so a different winner anywhere changes dx."""
    x = TIE_INPUTS[name].astype(dtype)
    if min(x.shape[2:]) + 2 * padding < kernel:
        pytest.skip("kernel larger than the padded input")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
    dy = np.arange(1, yt.numel() + 1, dtype=dtype).reshape(yt.shape)
    yt.backward(torch.from_numpy(dy))

    layer = nn.MaxPool2d(kernel, stride, padding, backend=backend)
    y = layer(x)
    np.testing.assert_array_equal(y, yt.detach().numpy())            # NaN == NaN here
    np.testing.assert_array_equal(layer.backward(dy), xt.grad.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_maxpool_kernel_itself_refuses_a_wrong_dy(backend):
    """Direct callers of a backend (tests, tutorials) get an error too, never a crash."""
    kernel = kernels.get(backend)
    y, ctx = kernel.maxpool2d_forward(np.zeros((2, 3, 6, 6), F32), (2, 2), (2, 2), (0, 0, 0, 0))
    with pytest.raises((ValueError, IndexError)):
        kernel.maxpool2d_backward(np.zeros((3, 3, 3, 3), F32), ctx)


@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (2, 3, 4, 0)])
def test_adaptive_pooling_of_nothing_is_refused_as_in_torch(shape):
    with pytest.raises(RuntimeError):
        torch.nn.AdaptiveAvgPool2d(2)(torch.zeros(shape))
    raises(ValueError, lambda: nn.AdaptiveAvgPool2d(2)(np.zeros(shape, F32)),
           "AdaptiveAvgPool2d", "non-zero height and width", str(shape))
