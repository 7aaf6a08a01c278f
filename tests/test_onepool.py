"""The one-pool convolution kernels (:mod:`minicnn.kernels.onepool`): PyTorch parity on the
shapes their paths special-case, float64 gradient checks, determinism, and the fallback.

The shift path (stride 1, ``C_in >= SHIFT_MIN_CHANNELS``, few wasted grid positions) runs ``SHIFT_GROUP`` samples per GEMM
and each thread takes a contiguous chunk of the batch, so the grid covers batch 1, a batch
smaller than the thread count, chunks that split into full and partial groups, and both paths
on each side of the channel threshold.
"""

import numba
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.kernels import blas, numba_backend, onepool, threads, weight_grad
from torch_oracle import GRADCHECK_TOL, assert_close, to_numpy, to_torch

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not blas.AVAILABLE,
                                reason="NumPy's BLAS exports no in-kernel GEMM here")

#: (batch, C_in, C_out, kernel, stride, padding (top, bottom, left, right), dilation, bias, HxW)
GRID = [
    (1, 12, 5, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, (7, 6)),     # batch 1, shift
    (19, 12, 6, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, (6, 6)),    # 9 + 10: full+partial groups
    (37, 12, 3, (3, 2), (1, 1), (0, 2, 1, 0), (2, 1), False, (14, 13)),  # asymmetric, dilated
    (5, 16, 7, 5, (1, 1), (2, 2, 2, 2), (1, 1), True, (9, 9)),     # LeNet-like 5x5
    (3, 12, 4, 5, (1, 1), (0, 0, 0, 0), (1, 1), True, (9, 9)),     # 'valid': too much waste
    (3, 3, 6, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, (10, 9)),     # unroll: C_in below the bar
    (17, 1, 4, 5, (1, 1), (2, 2, 2, 2), (1, 1), True, (12, 12)),   # unroll, one input channel
    (11, 6, 4, 3, (2, 2), (1, 1, 1, 1), (1, 1), True, (9, 8)),     # strided: unroll grid
    (4, 5, 3, (2, 3), (3, 2), (0, 1, 2, 0), (1, 2), True, (11, 10)),  # strided, odd everything
    (4, 7, 5, 3, (1, 2), (1, 1, 0, 2), (1, 1), False, (7, 12)),   # 3 wide, stride 2: tap pairs
    (2, 3, 2, 3, (2, 2), (0, 0, 0, 0), (1, 1), True, (3, 4)),      # tap pairs, one output column
    (3, 4, 3, 3, (2, 2), (1, 1, 1, 1), (1, 2), True, (9, 11)),     # dilated columns: tap by tap
    (6, 12, 2, 1, (1, 1), (0, 0, 0, 0), (1, 1), False, (4, 5)),    # 1x1
    (7, 12, 3, 3, (1, 1), (1, 2, 1, 0), (1, 1), True, (9, 10)),    # asymmetric gaps
    (5, 12, 3, 1, (1, 1), (1, 1, 2, 1), (1, 1), True, (4, 5)),     # output outgrows the stack
    (5, 12, 6, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, (20, 22)),   # long grid: three_taps dW
    (3, 12, 9, 3, (1, 1), (2, 2, 1, 1), (2, 1), False, (18, 20)),  # three_taps, dilated rows
]


def grid_id(case):
    n, cin, cout, k, s, p, d, b, hw = case
    return f"n{n}_c{cin}-{cout}_k{k}_s{s[0]}{s[1]}_p{''.join(map(str, p))}_d{d[0]}{d[1]}_{hw}"


def torch_conv(x, w, b, stride, pads, dilation, dy):
    top, bottom, left, right = pads
    tx, tw = to_torch(x, True), to_torch(w, True)
    tb = to_torch(b, True) if b is not None else None
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    ty = torch.nn.functional.conv2d(padded, tw, tb, stride=stride, dilation=dilation)
    ty.backward(to_torch(dy))
    return (to_numpy(ty), to_numpy(tx.grad), to_numpy(tw.grad),
            None if tb is None else to_numpy(tb.grad))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=grid_id)
def test_matches_torch(case, dtype, n_threads, rng):
    n, cin, cout, k, stride, pads, dilation, has_bias, (h, w) = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin, kh, kw)).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype) if has_bias else None
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        y, ctx = onepool.conv2d_forward(x, weight, bias, stride, pads, dilation)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, dweight, dbias = onepool.conv2d_backward(dy, ctx, need_input_grad=True)
        no_dx, dweight_again, _ = onepool.conv2d_backward(dy, ctx, need_input_grad=False)
    finally:
        numba.set_num_threads(previous)
    expected = torch_conv(x, weight, bias, stride, pads, dilation, dy)
    assert y.dtype == dx.dtype == dweight.dtype == dtype
    assert_close(y, expected[0], "y", dtype)
    assert_close(dx, expected[1], "dx", dtype)
    assert_close(dweight, expected[2], "dweight", dtype)
    if has_bias:
        assert_close(dbias, expected[3], "dbias", dtype)
    else:
        assert dbias is None
    assert no_dx is None
    np.testing.assert_array_equal(dweight_again, dweight)


def _grid_plans():
    """``(case, kh, kw, plan)`` for every GRID case: the plan its forward made."""
    for case in GRID:
        n, cin, cout, k, stride, pads, dilation, _, (h, w) = case
        kh, kw = (k, k) if isinstance(k, int) else k
        x = np.zeros((n, cin, h, w), np.float32)
        _, ctx = onepool.conv2d_forward(x, np.zeros((cout, cin, kh, kw), np.float32), None,
                                        stride, pads, dilation)
        yield case, kh, kw, ctx.plan


def test_the_grid_reaches_both_paths():
    """The parity grid must exercise the shift path and the unroll path (and the thresholds
    that choose between them), or it proves only one of them."""
    paths = set()
    for (n, cin, cout, k, stride, pads, dilation, _, (h, w)), kh, kw, plan in _grid_plans():
        shift = plan.stacked                    # True: the shift path; False: unroll
        paths.add(shift)
        if stride == (1, 1) and cin >= onepool.SHIFT_MIN_CHANNELS and not shift:
            top, bottom, left, right = pads
            fits = (h + top + bottom - (kh - 1) * dilation[0] <= h + max(top, bottom)
                    and w + left + right - (kw - 1) * dilation[1] <= w + max(left, right))
            paths.add("stack refused" if not fits else "too much waste")
        chunk = -(-n // 2)
        if shift and chunk > onepool.SHIFT_GROUP:
            paths.add("partial group")
    assert paths == {True, False, "partial group", "stack refused", "too much waste"}


def test_the_grid_reaches_both_weight_gradients_of_the_shift_path():
    """3x3 shift-path layers take their weight gradient as running sums where a group's grid
    is long enough (weight_grad.three_taps), else as copies and GEMMs: the grid needs both,
    and running sums over a number of output channels that is not a multiple of four."""
    seen = set()
    for case, _, kw, p in _grid_plans():
        cout = case[2]
        if not p.stacked or kw != 3 or p.dw != 1:
            continue
        span = ((p.group - 1) * p.block + p.out_h - 1) * p.pitch + p.out_w
        long_enough = span >= weight_grad.MIN_SPAN
        seen.add(("three taps" if long_enough else "GEMM", cout % 4 != 0, p.dh))
    assert {kind for kind, _, _ in seen} == {"three taps", "GEMM"}
    assert ("three taps", True, 1) in seen and ("three taps", True, 2) in seen


def test_the_grid_reaches_both_strided_copy_loops():
    """A 3-wide kernel with column stride 2 and no dilation unrolls and folds its taps
    together (column pairs); every other strided kernel tap by tap. The grid needs both."""
    pairs = {(k if isinstance(k, int) else k[1]) == 3 and stride[1] == 2 and dilation[1] == 1
             for _, _, _, k, stride, _, dilation, _, _ in GRID if stride != (1, 1)}
    assert pairs == {True, False}


@pytest.mark.parametrize("cin, stride", [(8, 1), (2, 1), (3, 2)], ids=["shift", "unroll",
                                                                       "strided"])
def test_gradcheck_float64(cin, stride, rng):
    layer = nn.Conv2d(cin, 3, 3, stride=stride, padding=1, backend="numba", rng=0,
                      dtype=np.float64)
    x = rng.standard_normal((3, cin, 6, 5))
    report = minicnn.gradcheck(layer, x)
    assert report.passed(GRADCHECK_TOL), report


@pytest.mark.parametrize("cin", [8, 2], ids=["shift", "unroll"])
def test_same_thread_count_is_bit_identical(cin, rng):
    x = rng.standard_normal((21, cin, 9, 9)).astype(np.float32)
    weight = rng.standard_normal((5, cin, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    runs = []
    for _ in range(2):
        y, ctx = onepool.conv2d_forward(x, weight, bias, (1, 1), (1, 1, 1, 1), (1, 1))
        runs.append((y, *onepool.conv2d_backward(np.cos(y), ctx)))
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


def test_empty_batch(rng):
    x = np.zeros((0, 8, 5, 5), np.float32)
    weight = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    y, ctx = onepool.conv2d_forward(x, weight, np.zeros(4, np.float32), (1, 1), (1, 1, 1, 1),
                                    (1, 1))
    assert y.shape == (0, 4, 5, 5)
    dx, dweight, dbias = onepool.conv2d_backward(y, ctx)
    assert dx.shape == x.shape
    assert not dweight.any() and not dbias.any()


def test_blas_threads_restored_after_a_kernel(rng):
    """The kernels hold BLAS at one thread while they run and give back the count it had."""
    before = threads.get_num_threads()["blas"]
    x = rng.standard_normal((4, 8, 6, 6)).astype(np.float32)
    onepool.conv2d_forward(x, np.ones((2, 8, 3, 3), np.float32), None, (1, 1), (0, 0, 0, 0),
                           (1, 1))
    assert threads.get_num_threads()["blas"] == before


def test_numba_backend_routes_through_onepool_and_falls_back(monkeypatch, rng):
    """Ungrouped float layers take the one-pool path; where it is unavailable (no in-kernel
    GEMM in this NumPy build) the relay kernels give the same numbers."""
    x = rng.standard_normal((6, 8, 7, 7)).astype(np.float32)
    weight = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    y, ctx = numba_backend.conv2d_forward(x, weight, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert isinstance(ctx, onepool.ConvContext)
    grads = numba_backend.conv2d_backward(np.sin(y), ctx)

    monkeypatch.setattr(blas, "AVAILABLE", False)
    assert not onepool.supports(x.dtype, weight, 1)
    y_relay, ctx_relay = numba_backend.conv2d_forward(x, weight, bias, (1, 1), (1, 1, 1, 1),
                                                      (1, 1), 1)
    assert isinstance(ctx_relay, numba_backend.GemmContext)
    assert_close(y, y_relay, "y")
    monkeypatch.setattr(blas, "AVAILABLE", True)
    monkeypatch.setattr(numba_backend, "USE_ONEPOOL", False)       # the switch tutorial 09 uses
    _, ctx_switched = numba_backend.conv2d_forward(x, weight, bias, (1, 1), (1, 1, 1, 1), (1, 1),
                                                   1)
    assert isinstance(ctx_switched, numba_backend.GemmContext)
    for ours, relay, name in zip(grads, numba_backend.conv2d_backward(np.sin(y), ctx_relay),
                                 ("dx", "dweight", "dbias")):
        assert_close(ours, relay, name)


def test_grouped_layers_do_not_take_the_onepool_path(rng):
    weight = np.ones((4, 2, 3, 3), np.float32)
    assert not onepool.supports(np.dtype(np.float32), weight, 2)
    assert not onepool.supports(np.dtype(np.float16), weight, 1)
