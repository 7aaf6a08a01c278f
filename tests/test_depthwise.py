"""Depthwise convolution (``groups == C_in == C_out``) on the numba backend: its direct kernels
(row kernels for strides > 1; for stride 1 the one-pool chunk kernels of
``minicnn.kernels.depthwise``, padded-width grid, three taps at once, padding fused, per-thread
weight-gradient partials) against PyTorch, and a float64 gradient check."""

import numba
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.kernels import depthwise, numba_backend
from torch_oracle import GRADCHECK_TOL, assert_close, to_numpy, to_torch

torch = pytest.importorskip("torch")

# (batch, channels, kernel, stride, padding (top, bottom, left, right), dilation, bias, HxW)
GRID = [
    (3, 4, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, (9, 8)),
    (1, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), False, (7, 7)),      # 5 taps: one triple + two
    (2, 3, (2, 4), (1, 1), (0, 1, 2, 1), (2, 1), True, (8, 9)),   # asymmetric, dilated
    (4, 6, 3, (1, 1), (0, 0, 0, 0), (2, 2), True, (9, 9)),        # dilation 2, valid
    (5, 7, 3, (2, 2), (1, 1, 1, 1), (1, 1), True, (11, 10)),      # strided: row kernels
    (2, 4, 3, (2, 1), (1, 0, 1, 1), (1, 2), False, (9, 9)),       # mixed stride
    (1, 2, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, (5, 6)),        # batch 1, one plane a thread
    (3, 5, (1, 7), (1, 1), (0, 0, 3, 3), (1, 1), True, (6, 9)),   # 7 taps; 15 planes: odd split
    (2, 3, 1, (1, 1), (0, 0, 0, 0), (1, 1), True, (4, 5)),        # 1x1
]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=lambda c: f"n{c[0]}_c{c[1]}_k{c[2]}_s{c[3]}_d{c[5]}")
def test_depthwise_matches_torch(case, dtype, n_threads, rng):
    n, channels, k, stride, pads, dilation, has_bias, (h, w) = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, channels, h, w)).astype(dtype)
    weight = rng.standard_normal((channels, 1, kh, kw)).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype) if has_bias else None
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        y, ctx = numba_backend.conv2d_forward(x, weight, bias, stride, pads, dilation, channels)
        assert isinstance(ctx, depthwise.DepthwiseContext if stride == (1, 1)
                          else numba_backend.StridedDepthwiseContext)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, dweight, dbias = numba_backend.conv2d_backward(dy, ctx, True)
        no_dx, dweight_only, _ = numba_backend.conv2d_backward(dy, ctx, False)
    finally:
        numba.set_num_threads(previous)
    top, bottom, left, right = pads
    tx, tw = to_torch(x, True), to_torch(weight, True)
    tb = to_torch(bias, True) if has_bias else None
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    ty = torch.nn.functional.conv2d(padded, tw, tb, stride=stride, dilation=dilation,
                                    groups=channels)
    ty.backward(to_torch(dy))
    assert_close(y, to_numpy(ty), "y", dtype)
    assert_close(dx, to_numpy(tx.grad), "dx", dtype)
    assert_close(dweight, to_numpy(tw.grad), "dweight", dtype)
    assert no_dx is None
    np.testing.assert_array_equal(dweight_only, dweight)   # the same sums without dx
    if has_bias:
        assert_close(dbias, to_numpy(tb.grad), "dbias", dtype)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_gradcheck_float64(stride, rng):
    layer = nn.Conv2d(3, 3, 3, stride=stride, padding=1, groups=3, backend="numba", rng=0,
                      dtype=np.float64)
    assert minicnn.gradcheck(layer, rng.standard_normal((2, 3, 6, 7))).passed(GRADCHECK_TOL)
