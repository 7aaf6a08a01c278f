"""Kernel backends: agreement with the reference (the definition), dtype preservation,
properties of the kernels (hypothesis) and the backend-selection API."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn
from minicnn import kernels, nn
from minicnn.kernels import BACKENDS
from minicnn.kernels.geometry import output_size
from minicnn.kernels.im2col import col2im, im2col
from torch_oracle import CONV_GRID, F64_IDENTITY_RTOL, assert_close, compact, conv_id, spaced

OTHER_BACKENDS = [b for b in BACKENDS if b != "reference"]
HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.fixture(autouse=True)
def restore_default_backend():
    """Tests here change the process-wide default; put it back whatever happens."""
    saved = kernels._default_backend
    yield
    kernels._default_backend = saved


def pads_of(padding, kernel, dilation):
    """(top, bottom, left, right) the way Conv2d resolves its padding argument."""
    layer = nn.Conv2d(1, 1, kernel, padding=padding, dilation=dilation, backend="reference")
    return layer._pads


# --------------------------------------------------------------------------------------------
# Every backend agrees with the reference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("need_input_grad", [True, False], ids=["dx", "no_dx"])
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("cfg", CONV_GRID, ids=conv_id)
def test_conv_matches_reference(cfg, backend, need_input_grad, rng):
    cin, cout, k, s, p, d, g, bias, hw = cfg
    layer = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias,
                      backend="reference", rng=0)
    args = (layer.stride, layer._pads, layer.dilation, g)
    x = rng.standard_normal((2, cin, *hw))
    w = layer.weight.data.astype(np.float64)
    b = None if layer.bias is None else layer.bias.data.astype(np.float64)
    ref, other = kernels.get("reference"), kernels.get(backend)
    y_ref, ctx_ref = ref.conv2d_forward(x, w, b, *args)
    y, ctx = other.conv2d_forward(x, w, b, *args)
    assert_close(y, y_ref, "conv forward")
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy, ctx_ref, True)
    dx, dw, db = other.conv2d_backward(dy, ctx, need_input_grad)
    assert_close(dw, dw_ref, "dweight")
    if bias:
        assert_close(db, db_ref, "dbias")
    else:
        assert db is None
    if need_input_grad:
        assert_close(dx, dx_ref, "dx")
    else:
        assert dx is None


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("padding", [(1, 0, 2, 1), (0, 2, 0, 1)])
def test_conv_asymmetric_padding_matches_reference(backend, padding, rng):
    """The kernel contract takes (top, bottom, left, right) with all four independent."""
    x, w, b = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 3, 2)), \
        rng.standard_normal(3)
    args = ((2, 1), padding, (1, 2), 1)
    y_ref, ctx_ref = kernels.get("reference").conv2d_forward(x, w, b, *args)
    y, ctx = kernels.get(backend).conv2d_forward(x, w, b, *args)
    assert_close(y, y_ref, "forward")
    dy = rng.standard_normal(y.shape)
    for got, want, name in zip(kernels.get(backend).conv2d_backward(dy, ctx),
                               kernels.get("reference").conv2d_backward(dy, ctx_ref),
                               ("dx", "dw", "db")):
        assert_close(got, want, name)


#: (kernel, stride, padding (t, b, l, r), (H, W))
POOL_KERNEL_GRID = [
    ((2, 2), (2, 2), (0, 0, 0, 0), (6, 6)),
    ((2, 2), (2, 2), (0, 0, 0, 0), (7, 5)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (7, 7)),
    ((3, 3), (1, 1), (1, 1, 1, 1), (5, 6)),
    ((2, 3), (1, 2), (1, 1, 1, 1), (5, 7)),
    ((3, 2), (3, 1), (1, 0, 0, 1), (8, 5)),
    ((4, 4), (2, 2), (2, 2, 2, 2), (5, 5)),
]
POOL_IDS = [f"k{compact(k)}_s{compact(s)}_p{compact(p)}_{compact(hw)}"
            for k, s, p, hw in POOL_KERNEL_GRID]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_KERNEL_GRID, ids=POOL_IDS)
def test_maxpool_matches_reference(kernel, stride, padding, hw, backend, rng):
    x = spaced((2, 3, *hw), rng)
    ref, other = kernels.get("reference"), kernels.get(backend)
    y_ref, ctx_ref = ref.maxpool2d_forward(x, kernel, stride, padding)
    y, ctx = other.maxpool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, y_ref)       # a max is exact: no round-off allowed
    dy = rng.standard_normal(y.shape)
    assert_close(other.maxpool2d_backward(dy, ctx), ref.maxpool2d_backward(dy, ctx_ref), "dx")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_maxpool_ties_go_to_the_first_position(backend):
    """With equal values the first position in row-major order wins, as in the reference."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1:3, 1:3] = 1.0
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    ref, other = kernels.get("reference"), kernels.get(backend)
    _, ctx_ref = ref.maxpool2d_forward(x, (2, 2), (1, 1), (0, 0, 0, 0))
    _, ctx = other.maxpool2d_forward(x, (2, 2), (1, 1), (0, 0, 0, 0))
    np.testing.assert_array_equal(other.maxpool2d_backward(dy, ctx),
                                  ref.maxpool2d_backward(dy, ctx_ref))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (1, 1, 1, 1)], ids=["unpadded", "padded"])
def test_maxpool_propagates_nan(backend, padding):
    """A NaN in a window makes that output NaN (as in PyTorch) and takes the gradient; the
    other windows are unaffected."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y, ctx = kernels.get(backend).maxpool2d_forward(x, (2, 2), (2, 2), padding)
    assert np.isnan(y[0, 0, 0, 0 if padding[0] == 0 else 1])
    assert np.isfinite(y).sum() == y.size - 1
    dx = kernels.get(backend).maxpool2d_backward(np.ones_like(y), ctx)
    assert dx[0, 0, 0, 1] == 1 and dx.sum() == y.size


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_KERNEL_GRID, ids=POOL_IDS)
def test_avgpool_matches_reference(kernel, stride, padding, hw, count_include_pad, backend,
                                   rng):
    x = rng.standard_normal((2, 3, *hw))
    ref, other = kernels.get("reference"), kernels.get(backend)
    y_ref, ctx_ref = ref.avgpool2d_forward(x, kernel, stride, padding, count_include_pad)
    y, ctx = other.avgpool2d_forward(x, kernel, stride, padding, count_include_pad)
    assert_close(y, y_ref, "forward")
    dy = rng.standard_normal(y.shape)
    assert_close(other.avgpool2d_backward(dy, ctx), ref.avgpool2d_backward(dy, ctx_ref), "dx")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_float32_backends_agree(backend, rng):
    """The same in float32, through the layers, at float32 tolerance."""
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    results = {}
    for name in ("reference", backend):
        model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2, backend=name, rng=0),
                              nn.MaxPool2d(3, 2, 1, backend=name),
                              nn.Conv2d(6, 5, (2, 3), stride=(1, 2), dilation=(2, 1),
                                        backend=name, rng=1),
                              nn.AvgPool2d(2, 1, 1, count_include_pad=False, backend=name))
        y = model(x)
        dx = model.backward(np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype))
        results[name] = (y, dx, [p.grad.copy() for p in model.parameters()])
    (y_ref, dx_ref, g_ref), (y, dx, g) = results["reference"], results[backend]
    assert_close(y, y_ref, "output", np.float32)
    assert_close(dx, dx_ref, "dx", np.float32)
    for i, (a, b) in enumerate(zip(g, g_ref)):
        assert_close(a, b, f"param grad {i}", np.float32)


# --------------------------------------------------------------------------------------------
# dtype in == dtype out
# --------------------------------------------------------------------------------------------
def _layer_cases():
    kernel_layers = {
        "conv": (lambda b: nn.Conv2d(2, 4, 3, padding=1, groups=2, backend=b, rng=0),
                 (2, 2, 5, 5)),
        "maxpool": (lambda b: nn.MaxPool2d(3, 2, 1, backend=b), (2, 2, 5, 5)),
        "avgpool": (lambda b: nn.AvgPool2d(3, 2, 1, count_include_pad=False, backend=b),
                    (2, 2, 5, 5)),
        "model": (lambda b: nn.Sequential(nn.Conv2d(2, 3, 3, backend=b, rng=0), nn.ReLU(),
                                          nn.MaxPool2d(2, backend=b), nn.Flatten(),
                                          nn.Linear(12, 3, rng=0)), (2, 2, 6, 6)),
        "basic_block": (lambda b: nn.BasicBlock(2, 3, stride=2, backend=b, rng=0),
                        (2, 2, 5, 5)),
    }
    plain_layers = {
        "adaptive_avgpool": (lambda b: nn.AdaptiveAvgPool2d(3), (2, 2, 7, 5)),
        "adaptive_avgpool_1": (lambda b: nn.AdaptiveAvgPool2d(1), (2, 2, 7, 5)),
        "linear": (lambda b: nn.Linear(5, 3, rng=0), (4, 5)),
        "flatten": (lambda b: nn.Flatten(), (2, 2, 3, 3)),
        "relu": (lambda b: nn.ReLU(), (3, 4)),
        "leaky_relu": (lambda b: nn.LeakyReLU(0.1), (3, 4)),
        "sigmoid": (lambda b: nn.Sigmoid(), (3, 4)),
        "tanh": (lambda b: nn.Tanh(), (3, 4)),
        "dropout_train": (lambda b: nn.Dropout(0.5, rng=0), (3, 4)),
        "dropout_eval": (lambda b: nn.Dropout(0.5, rng=0).eval(), (3, 4)),
        "batchnorm1d": (lambda b: nn.BatchNorm1d(3), (4, 3)),
        "batchnorm1d_eval": (lambda b: nn.BatchNorm1d(3).eval(), (4, 3, 2)),
        "batchnorm2d": (lambda b: nn.BatchNorm2d(2), (2, 2, 3, 3)),
        "batchnorm2d_eval": (lambda b: nn.BatchNorm2d(2).eval(), (2, 2, 3, 3)),
    }
    cases = []
    for name, (make, shape) in kernel_layers.items():
        cases += [pytest.param(make, shape, b, id=f"{name}-{b}") for b in BACKENDS]
    for name, (make, shape) in plain_layers.items():
        cases.append(pytest.param(make, shape, "reference", id=name))
    return cases


LAYER_CASES = _layer_cases()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("make, shape, backend", LAYER_CASES)
def test_dtype_preserved(make, shape, backend, dtype, rng):
    """A layer cast to ``dtype`` and fed ``dtype`` returns ``dtype`` everywhere."""
    layer = make(backend).to(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer(x)
    assert y.dtype == dtype, f"output {y.dtype}"
    dx = layer.backward(rng.standard_normal(y.shape).astype(dtype))
    assert dx.dtype == dtype, f"input gradient {dx.dtype}"
    for name, param in layer.named_parameters():
        assert param.data.dtype == dtype and param.grad.dtype == dtype, name
        assert param.grad.any(), f"{name}: no gradient arrived"
    for name, buf in layer.named_buffers():
        if np.issubdtype(np.asarray(buf).dtype, np.floating):
            assert np.asarray(buf).dtype == dtype, name


@pytest.mark.parametrize("make, shape, backend", LAYER_CASES)
def test_float32_layer_keeps_float64_input(make, shape, backend, rng):
    """A default (float32) layer given float64 computes and returns float64 (gradcheck
    depends on it); its parameters and their gradients stay float32."""
    layer = make(backend)
    x = rng.standard_normal(shape)
    y = layer(x)
    assert y.dtype == np.float64
    dx = layer.backward(rng.standard_normal(y.shape))
    assert dx.dtype == np.float64
    for name, param in layer.named_parameters():
        assert param.grad.dtype == param.data.dtype == np.float32, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("loss, target", [
    (nn.CrossEntropyLoss(), np.array([0, 2, 1, 2])),
    (nn.CrossEntropyLoss(label_smoothing=0.2), np.array([0, 2, 1, 2])),
    (nn.MSELoss(), np.ones((4, 3))),
], ids=["ce", "ce_smooth", "mse"])
def test_loss_dtype(loss, target, dtype, rng):
    value = loss(rng.standard_normal((4, 3)).astype(dtype), target)
    assert np.ndim(value) == 0 and np.isfinite(value)
    assert loss.backward().dtype == dtype


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_kernel_functions_keep_dtype(backend, dtype, rng):
    kb = kernels.get(backend)
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    w = rng.standard_normal((2, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    y, ctx = kb.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 2)
    dy = np.ones_like(y)
    outs = [y, *kb.conv2d_backward(dy, ctx)]
    y, ctx = kb.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0))
    outs += [y, kb.maxpool2d_backward(np.ones_like(y), ctx)]
    for count_include_pad in (True, False):
        y, ctx = kb.avgpool2d_forward(x, (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad)
        outs += [y, kb.avgpool2d_backward(np.ones_like(y), ctx)]
    assert [o.dtype for o in outs] == [np.dtype(dtype)] * len(outs)


@pytest.mark.parametrize("make, shape, backend", LAYER_CASES)
def test_layers_do_not_modify_their_inputs(make, shape, backend, rng):
    """Forward must not write into x, backward not into dy (no in-place gradient edits)."""
    layer = make(backend)
    x = rng.standard_normal(shape).astype(np.float32)
    x_copy = x.copy()
    y = layer(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy_copy = dy.copy()
    layer.backward(dy)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dy, dy_copy)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_do_not_modify_their_inputs(backend, rng):
    kb = kernels.get(backend)
    x, w, b = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((4, 2, 3, 3)), \
        rng.standard_normal(4)
    copies = [a.copy() for a in (x, w, b)]
    y, ctx = kb.conv2d_forward(x, w, b, (2, 1), (1, 0, 1, 2), (1, 1), 2)
    dy = rng.standard_normal(y.shape)
    dy_copy = dy.copy()
    kb.conv2d_backward(dy, ctx)
    for name, fwd, bwd in (("max", kb.maxpool2d_forward, kb.maxpool2d_backward),
                           ("avg", kb.avgpool2d_forward, kb.avgpool2d_backward)):
        y, ctx = fwd(x, (3, 2), (2, 1), (1, 1, 1, 0))
        g = np.ones_like(y)
        bwd(g, ctx)
        assert (g == 1).all(), f"{name}pool backward wrote into dy"
    for a, c in zip((x, w, b, dy), (*copies, dy_copy)):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------------------------
# Properties (hypothesis)
# --------------------------------------------------------------------------------------------
@st.composite
def conv_geometry(draw, max_kernel=3):
    """A random valid (x shape, kernel, stride, padding 4-tuple, dilation)."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(max(1, span_h - pads[0] - pads[1]), 8))
    w = draw(st.integers(max(1, span_w - pads[2] - pads[3]), 8))
    return (n, c, h, w), (kh, kw), (sh, sw), pads, (dh, dw)


@HYPOTHESIS
@given(geometry=conv_geometry(), seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(geometry, seed):
    shape, kernel, stride, padding, dilation = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols, (out_h, out_w) = im2col(x, kernel, stride, padding, dilation)
    assert cols.shape == (shape[1] * kernel[0] * kernel[1], shape[0] * out_h * out_w)
    c = rng.standard_normal(cols.shape)
    back = col2im(c, shape, kernel, stride, padding, dilation)
    assert back.shape == shape
    lhs, rhs = np.vdot(cols, c), np.vdot(x, back)
    assert abs(lhs - rhs) <= F64_IDENTITY_RTOL * (np.abs(cols).sum() * np.abs(c).max() + 1)


@st.composite
def pool_geometry(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 8))
    w = draw(st.integers(max(1, kw - 2 * pw), 8))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw)


@pytest.mark.parametrize("backend", BACKENDS)
@HYPOTHESIS
@given(geometry=pool_geometry(), seed=st.integers(0, 2**16))
def test_maxpool_routes_gradient_only_to_the_argmax(backend, geometry, seed):
    shape, kernel, stride, (ph, pw) = geometry
    rng = np.random.default_rng(seed)
    x = spaced(shape, rng)
    layer = nn.MaxPool2d(kernel, stride, (ph, pw), backend=backend)
    y = layer(x)
    dy = rng.uniform(0.5, 1.5, y.shape)          # positive: no cancellation in the sums
    dx = layer.backward(dy)
    # The winners, found independently: the position of each output's value in its window.
    winners = np.zeros(shape, dtype=bool)
    for n, c, i, j in np.ndindex(*y.shape):
        r0, c0 = i * stride[0] - ph, j * stride[1] - pw
        rows = slice(max(r0, 0), r0 + kernel[0])
        cols = slice(max(c0, 0), c0 + kernel[1])
        window = x[n, c, rows, cols]
        assert y[n, c, i, j] == window.max()
        winners[n, c, rows, cols] |= window == y[n, c, i, j]
    np.testing.assert_array_equal(dx != 0, winners)
    np.testing.assert_allclose(dx.sum(), dy.sum(), rtol=F64_IDENTITY_RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
@HYPOTHESIS
@given(geometry=pool_geometry(), seed=st.integers(0, 2**16))
def test_avgpool_backward_preserves_the_gradient_sum(backend, geometry, seed):
    """Each window hands its whole gradient to the cells it averaged: without padding (and
    with padding when padded cells do not count) the sum of dx equals the sum of dy; with
    counted padding each window loses the share of its padded cells."""
    shape, kernel, stride, (ph, pw) = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    for padding, count_include_pad in (((0, 0), True), ((ph, pw), False), ((ph, pw), True)):
        if min(s + 2 * p - k for s, p, k in zip(shape[2:], padding, kernel)) < 0:
            continue
        layer = nn.AvgPool2d(kernel, stride, padding, count_include_pad, backend=backend)
        y = layer(x)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        if count_include_pad and padding != (0, 0):
            real = layer(np.ones(shape))  # fraction of each window that is real input
            expected = (dy * real).sum()
        else:
            expected = dy.sum()
        np.testing.assert_allclose(dx.sum(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@HYPOTHESIS
@given(geometry=conv_geometry(), data=st.data())
def test_one_hot_kernel_shifts_the_input(backend, geometry, data):
    """A kernel that is 1 at one tap (ki, kj) of one input channel just reads the padded
    input at that offset: ``y[n, 0, i, j] == x_pad[n, ci, i*sH + ki*dH, j*sW + kj*dW]``."""
    (n, c, h, w), (kh, kw), stride, padding, dilation = geometry
    ki, kj = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    ci = data.draw(st.integers(0, c - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w))
    weight = np.zeros((1, c, kh, kw))
    weight[0, ci, ki, kj] = 1.0
    y, _ = kernels.get(backend).conv2d_forward(x, weight, None, stride, padding, dilation, 1)
    top, bottom, left, right = padding
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h = output_size(h, kh, stride[0], top, bottom, dilation[0])
    out_w = output_size(w, kw, stride[1], left, right, dilation[1])
    r0, c0 = ki * dilation[0], kj * dilation[1]
    shifted = x_pad[:, ci, r0: r0 + stride[0] * (out_h - 1) + 1: stride[0],
                    c0: c0 + stride[1] * (out_w - 1) + 1: stride[1]]
    np.testing.assert_array_equal(y[:, 0], shifted)


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------
class Spy:
    """Counts calls to one backend's conv2d_forward (monkeypatched in)."""

    def __init__(self, monkeypatch, backend):
        module = kernels.get(backend)
        self.calls, original = 0, module.conv2d_forward

        def spy(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, "conv2d_forward", spy)


def run_conv(layer):
    layer(np.zeros((1, 1, 3, 3), np.float32))


def test_default_backend_is_the_fastest_available(monkeypatch):
    kernels._default_backend = None            # as in a fresh process
    # Whether Numba itself is installed (minicnn's own numba_backend.py always exists, so
    # looking that module up would expect "numba" whatever happened).
    numba_ready = importlib.util.find_spec("numba") is not None
    assert minicnn.get_default_backend() == ("numba" if numba_ready else "im2col")
    # ... and where the numba backend cannot be imported, the default falls back to im2col.
    real_get = kernels.get

    def no_numba(name):
        if name == "numba":
            raise ImportError("no numba here")
        return real_get(name)

    monkeypatch.setattr(kernels, "get", no_numba)
    kernels._default_backend = None
    assert minicnn.get_default_backend() == "im2col"


def test_set_default_backend_is_used_by_layers_without_one(monkeypatch):
    spies = {name: Spy(monkeypatch, name) for name in ("reference", "im2col")}
    layer = nn.Conv2d(1, 1, 3, rng=0)          # no backend: follows the default at each call
    for name in ("reference", "im2col", "reference"):
        minicnn.set_default_backend(name)
        assert minicnn.get_default_backend() == name
        run_conv(layer)
    assert spies["reference"].calls == 2 and spies["im2col"].calls == 1


def test_use_backend_is_temporary(monkeypatch):
    spy = Spy(monkeypatch, "reference")
    minicnn.set_default_backend("im2col")
    layer = nn.Conv2d(1, 1, 3, rng=0)
    with minicnn.use_backend("reference"):
        assert minicnn.get_default_backend() == "reference"
        run_conv(layer)
    assert minicnn.get_default_backend() == "im2col"
    run_conv(layer)
    assert spy.calls == 1
    with pytest.raises(KeyError):
        with minicnn.use_backend("reference"):
            raise KeyError("boom")
    assert minicnn.get_default_backend() == "im2col"   # restored on error too


def test_layer_backend_overrides_the_default(monkeypatch):
    spies = {name: Spy(monkeypatch, name) for name in ("reference", "im2col")}
    minicnn.set_default_backend("reference")
    run_conv(nn.Conv2d(1, 1, 3, backend="im2col", rng=0))
    with minicnn.use_backend("reference"):
        run_conv(nn.Conv2d(1, 1, 3, backend="im2col", rng=0))
    assert spies["im2col"].calls == 2 and spies["reference"].calls == 0


@pytest.mark.parametrize("call", [
    lambda: minicnn.set_default_backend("cuda"),
    lambda: minicnn.use_backend("cuda").__enter__(),
    lambda: kernels.get("cuda"),
    lambda: nn.Conv2d(1, 1, 3, backend="cuda"),
    lambda: nn.MaxPool2d(2, backend="cuda"),
    lambda: nn.AvgPool2d(2, backend="cuda"),
    lambda: nn.BasicBlock(1, 1, backend="cuda"),
], ids=["set_default", "use_backend", "get", "conv", "maxpool", "avgpool", "basic_block"])
def test_unknown_backend_lists_the_valid_ones(call):
    before = minicnn.get_default_backend()
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "cuda" in message
    assert all(name in message for name in BACKENDS), message
    assert minicnn.get_default_backend() == before
