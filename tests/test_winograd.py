"""Winograd's F(2x2, 3x3) forward (:mod:`minicnn.kernels.winograd`), which the one-pool
convolution runs for 3x3 stride-1 layers on the shift path with many input channels.

It rounds differently from the direct sum, so it is held to PyTorch and to the shift path's
forward at the float32 tolerance (and float64's), to float64 gradient checks through a layer,
and its fused ReLU / 2x2 pooling to exactly what the separate layers give on its own output.
The grid covers what the kernel special-cases: batch 1, a batch smaller than the thread count,
groups of samples that split into full and partial ones, odd output heights and widths (a
last row or column of tiles half used, a pooling that drops it), even and odd left padding
(the phase split), asymmetric padding and a 1x1 output.
"""

import numba
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.kernels import blas, contracts, numba_backend, onepool, winograd
from torch_oracle import GRADCHECK_TOL, assert_close, to_numpy, to_torch

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not blas.AVAILABLE,
                                reason="NumPy's BLAS exports no in-kernel GEMM here")

#: (batch, C_in, C_out, padding (top, bottom, left, right), bias, (H, W)); 3x3, stride 1.
GRID = [
    (1, 32, 5, (1, 1, 1, 1), True, (14, 14)),      # batch 1
    (2, 32, 8, (1, 1, 1, 1), True, (13, 11)),      # odd outputs; one sample per thread
    (9, 33, 7, (0, 0, 0, 0), False, (16, 15)),     # 'valid', odd width, no bias
    (7, 40, 6, (2, 2, 2, 2), True, (6, 7)),        # left padding even: the other phase split
    (5, 32, 3, (1, 2, 1, 0), True, (9, 10)),       # asymmetric padding
    (6, 32, 4, (0, 2, 2, 0), True, (8, 7)),        # asymmetric, left even
    (67, 32, 16, (1, 1, 1, 1), True, (4, 4)),      # many samples per group: partial groups
    (3, 32, 2, (1, 1, 1, 1), True, (1, 1)),        # one output pixel per sample
    # 8 tiles or more a row: transformed from a padded copy (winograd.PADDED_MIN_TILES)
    (3, 16, 8, (1, 1, 1, 1), False, (16, 16)),     # one block of 8 tiles a row
    (2, 20, 5, (1, 2, 1, 0), True, (11, 19)),      # asymmetric, 9 tiles: overlapping blocks
    (2, 17, 4, (2, 2, 2, 2), True, (6, 17)),       # left padding even, odd output width
    (3, 16, 3, (0, 0, 0, 0), False, (7, 24)),      # 'valid', 11 tiles a row
]


def grid_id(case):
    n, cin, cout, pads, bias, hw = case
    return f"n{n}_c{cin}-{cout}_p{''.join(map(str, pads))}_{'b' if bias else 'nb'}_{hw}"


def make_case(case, dtype, rng):
    n, cin, cout, pads, has_bias, (h, w) = case
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin, 3, 3)).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype) if has_bias else None
    return x, weight, bias, pads


def with_threads(n_threads, function, *args, **kwargs):
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return function(*args, **kwargs)
    finally:
        numba.set_num_threads(previous)


def layer_plan(x_shape, w_shape, stride, pads, dilation):
    """The layer's plan, with the shift path's stacked layout where stride 1 allows one."""
    plan = contracts.conv_plan(x_shape, w_shape, stride, pads, dilation)
    stacked = (contracts.with_stacked_layout(plan, x_shape, pads, onepool.SHIFT_GROUP)
               if stride == (1, 1) else None)
    return plan if stacked is None else stacked


def runs_winograd(x, weight, pads) -> bool:
    plan = layer_plan(x.shape, weight.shape, (1, 1), pads, (1, 1))
    return onepool._winograd_applies(plan, x.shape[1])


def test_every_grid_case_runs_winograd(rng):
    """Otherwise the grid below proves the shift path instead."""
    for case in GRID:
        x, weight, _, pads = make_case(case, np.float32, rng)
        assert runs_winograd(x, weight, pads), grid_id(case)


def test_where_winograd_applies(rng):
    """3x3, stride 1, undilated, on the shift path, with enough input channels; not below."""
    few = onepool.WINOGRAD_MIN_CHANNELS - 1
    cases = [((2, onepool.WINOGRAD_MIN_CHANNELS, 8, 8), (4, onepool.WINOGRAD_MIN_CHANNELS, 3, 3),
              (1, 1), (1, 1), True),
             ((2, few, 8, 8), (4, few, 3, 3), (1, 1), (1, 1), False),          # few channels
             ((2, 32, 8, 8), (4, 32, 5, 5), (1, 1), (1, 1), False),            # 5x5
             ((2, 32, 9, 9), (4, 32, 3, 3), (2, 2), (1, 1), False),            # stride 2
             ((2, 32, 9, 9), (4, 32, 3, 3), (1, 1), (2, 2), False)]            # dilated
    for x_shape, w_shape, stride, dilation, expected in cases:
        plan = layer_plan(x_shape, w_shape, stride, (1, 1, 1, 1), dilation)
        assert onepool._winograd_applies(plan, x_shape[1]) is expected


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=grid_id)
def test_forward_matches_torch_and_the_shift_path(case, dtype, n_threads, rng, monkeypatch):
    x, weight, bias, pads = make_case(case, dtype, rng)
    y, ctx = with_threads(n_threads, onepool.conv2d_forward, x, weight, bias, (1, 1), pads,
                          (1, 1))
    top, bottom, left, right = pads
    padded = torch.nn.functional.pad(to_torch(x), (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(padded, to_torch(weight),
                                          None if bias is None else to_torch(bias))
    assert y.dtype == dtype
    assert_close(y, to_numpy(expected), "winograd y", dtype)
    monkeypatch.setattr(onepool, "USE_WINOGRAD", False)
    y_shift, _ = with_threads(n_threads, onepool.conv2d_forward, x, weight, bias, (1, 1), pads,
                              (1, 1))
    assert_close(y, y_shift, "winograd against the shift path", dtype)
    # The weight and bias gradients are the shift path's either way: the same from either
    # forward's ctx; so is the input gradient, but for the layers that run it as a Winograd
    # forward (test_input_gradient_as_a_winograd_forward), held to the float tolerance.
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = with_threads(n_threads, onepool.conv2d_backward, dy, ctx)
    monkeypatch.setattr(onepool, "USE_WINOGRAD", True)
    _, ctx_again = with_threads(n_threads, onepool.conv2d_forward, x, weight, bias, (1, 1),
                                pads, (1, 1))
    again = with_threads(n_threads, onepool.conv2d_backward, dy, ctx_again)
    assert_close(again[0], grads[0], "input gradient", dtype)
    for got, want in zip(grads[1:], again[1:]):
        if want is not None:
            np.testing.assert_array_equal(got, want)


#: (batch, C_in, C_out, (H, W)) with padding 1 and at least WINOGRAD_MIN_CHANNELS (16) output
#: channels: the input gradient runs as a Winograd forward of the output gradient.
BACKWARD_GRID = [(3, 16, 32, (9, 7)), (1, 12, 40, (14, 14)), (5, 32, 17, (4, 5))]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", BACKWARD_GRID, ids=str)
def test_input_gradient_as_a_winograd_forward(case, dtype, n_threads, rng, monkeypatch):
    """dX of a 3x3 padding-1 layer with >= 16 output channels: the convolution of dY with the
    flipped, transposed filters, by Winograd; held to PyTorch and to the shift path's dX at
    the float tolerance, with the weight and bias gradients the shift path's bit for bit;
    through the fused ReLU and pooling as through the plain layer."""
    n, c_in, c_out, (h, w) = case
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    pads = (1, 1, 1, 1)
    y, ctx = with_threads(n_threads, onepool.conv2d_forward, x, weight, bias, (1, 1), pads,
                          (1, 1))
    assert onepool._winograd_input_grad_applies(ctx.plan, x.shape, c_out)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = with_threads(n_threads, onepool.conv2d_backward, dy, ctx)
    xt, wt = to_torch(x).requires_grad_(True), to_torch(weight).requires_grad_(True)
    torch.nn.functional.conv2d(xt, wt, to_torch(bias), padding=1).backward(to_torch(dy))
    assert_close(dx, to_numpy(xt.grad), "winograd dx", dtype)
    assert_close(dw, to_numpy(wt.grad), "dw", dtype)
    monkeypatch.setattr(onepool, "USE_WINOGRAD", False)
    shift = with_threads(n_threads, onepool.conv2d_backward, dy, ctx)
    assert_close(dx, shift[0], "winograd dx against the shift path", dtype)
    np.testing.assert_array_equal(dw, shift[1])
    np.testing.assert_array_equal(db, shift[2])
    monkeypatch.setattr(onepool, "USE_WINOGRAD", True)
    if min(h, w) < 2:
        return
    # fused ReLU + pooling: the same as the plain backward of the ReLU and pooling's gradient
    y, pooled, argmax, ctx = with_threads(n_threads, onepool.conv2d_relu_forward, x, weight,
                                          bias, (1, 1), pads, (1, 1), maxpool=True)
    d_pooled = rng.standard_normal(pooled.shape).astype(dtype)
    fused = with_threads(n_threads, onepool.conv2d_relu_backward, d_pooled, ctx, y,
                         pooled=pooled, argmax=argmax)
    dz = np.zeros_like(y)
    rows, cols = argmax // y.shape[3], argmax % y.shape[3]
    nn_, cc = np.indices(pooled.shape[:2])
    for i in range(pooled.shape[2]):
        for j in range(pooled.shape[3]):
            keep = pooled[:, :, i, j] > 0
            dz[nn_, cc, rows[:, :, i, j], cols[:, :, i, j]] = np.where(
                keep, d_pooled[:, :, i, j], 0)
    plain = with_threads(n_threads, onepool.conv2d_backward, dz, ctx)
    for got, want in zip(fused, plain):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("case", GRID, ids=grid_id)
def test_fused_relu_and_pooling_are_the_layers_on_its_output(case, n_threads, rng):
    """The fused output pass picks values only: the ReLU and 2x2 pooling of the Winograd
    convolution's own output, bit for bit, winners included."""
    x, weight, bias, pads = make_case(case, np.float32, rng)
    y_plain, _ = with_threads(n_threads, onepool.conv2d_forward, x, weight, bias, (1, 1), pads,
                              (1, 1))
    relu = np.where(y_plain < 0, np.float32(0), y_plain)
    y, _, _, _ = with_threads(n_threads, onepool.conv2d_relu_forward, x, weight, bias, (1, 1),
                              pads, (1, 1))
    np.testing.assert_array_equal(y, relu)
    if min(relu.shape[2:]) < 2:
        return
    pooled_ref, pool_ctx = numba_backend.maxpool2d_forward(relu, (2, 2), (2, 2), (0, 0, 0, 0))
    for winners in (True, False):
        y, pooled, argmax, _ = with_threads(n_threads, onepool.conv2d_relu_forward, x, weight,
                                            bias, (1, 1), pads, (1, 1), maxpool=True,
                                            winners=winners)
        np.testing.assert_array_equal(y, relu)
        np.testing.assert_array_equal(pooled, pooled_ref)
        if winners:
            np.testing.assert_array_equal(argmax, numba_backend._winners(pool_ctx))
        else:
            assert argmax is None


def test_repeatable_bit_for_bit(rng):
    x, weight, bias, pads = make_case(GRID[6], np.float32, rng)
    first, _ = with_threads(2, onepool.conv2d_forward, x, weight, bias, (1, 1), pads, (1, 1))
    again, _ = with_threads(2, onepool.conv2d_forward, x, weight, bias, (1, 1), pads, (1, 1))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("kind", ["f2x2", "f4x4"])
@pytest.mark.parametrize("n", [9, 20])
def test_groups_are_claimed_one_thread_may_take_them_all(kind, n, rng):
    """The training forward (and input gradient) hands its groups of samples out as threads
    ask (minicnn.kernels.claims): thread 1 of 2 called alone, with a fresh counter, computes
    every group, and the output equals a normal one- and two-thread call bit for bit (with
    fixed shares it would have filled only its half). F(4x4): 9 samples are one octet and a
    wide-grid rest, 20 two octets and a rest; F(2x2) on 10x18 planes takes groups of 3
    samples, the last one short."""
    from minicnn.kernels import contracts, parallel, winograd4
    c_in = 64 if kind == "f4x4" else 16
    x = rng.standard_normal((n, c_in, 8, 8) if kind == "f4x4" else (n, c_in, 10, 18)
                            ).astype(np.float32)
    weight = (rng.standard_normal((8, c_in, 3, 3)) * 0.1).astype(np.float32)
    bias = np.zeros(1, np.float32)
    plan = contracts.conv_plan(x.shape, weight.shape, (1, 1), (1, 1, 1, 1), (1, 1))
    y_shape = (n, 8) + x.shape[2:]
    if kind == "f4x4":
        u, chunk = winograd4.transform_weights(weight), winograd4.forward_chunk

        def args(y):
            return winograd4.arguments(x, u, bias, False, y, False)
    else:
        u, chunk = winograd.transform_weights(weight), winograd.forward_chunk
        none = np.empty((0, 0, 0, 0), np.float32)

        def args(y):
            return winograd.arguments(x, u, bias, False, y, 0, none, none.astype(np.int32))
    outputs = []
    for n_threads in (1, 2):
        y = np.full(y_shape, np.nan, np.float32)
        with_threads(n_threads, parallel.run, chunk, args(y), plan, n_threads, np.float32)
        outputs.append(y)
    alone = np.full(y_shape, np.nan, np.float32)
    parallel.run(chunk, args(alone), plan, 1, np.float32)   # compiled for these types
    alone[...] = np.nan
    chunk(args(alone), plan, 1, 2)                          # thread 1 of 2, by itself
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(alone, outputs[0])
    assert np.isfinite(alone).all()


def test_transformed_filters_are_g_g_gt(rng):
    """``U[4*i + j, o, c] = (G g Gᵀ)[i, j]`` for every filter, against a plain matrix product."""
    weight = rng.standard_normal((3, 2, 3, 3))
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    expected = np.einsum("ik,ockl,jl->ijoc", g, weight, g).reshape(16, 3, 2)
    np.testing.assert_allclose(winograd.transform_weights(weight), expected, rtol=1e-14,
                               atol=1e-14)


@pytest.mark.parametrize("padding, hw", [(1, (5, 4)), (0, (6, 6))])
def test_gradcheck_through_a_layer(padding, hw, rng):
    """Central differences of the Winograd forward against the shift path's backward, float64."""
    layer = nn.Conv2d(32, 2, 3, padding=padding, backend="numba", rng=rng)   # cast to f64 there
    x = rng.standard_normal((2, 32) + hw)
    assert runs_winograd(x, layer.weight.data, (padding,) * 4)
    result = minicnn.gradcheck(layer, x)
    assert result.max_error < GRADCHECK_TOL, f"\n{result}"


def test_a_nan_reaches_at_least_the_windows_it_is_in(rng):
    """Non-finite input: the transforms mix a 4x4 tile's cells before multiplying, so a NaN
    (or inf) reaches all four outputs of each tile it is in, a superset of the windows that
    hold it (documented in the module); never fewer outputs than the direct sum."""
    x = rng.standard_normal((2, 32, 8, 8)).astype(np.float32)
    x[1, 5, 3, 4] = np.nan
    weight = rng.standard_normal((4, 32, 3, 3)).astype(np.float32)
    y, _ = onepool.conv2d_forward(x, weight, None, (1, 1), (1, 1, 1, 1), (1, 1))
    from minicnn.kernels import reference
    expected, _ = reference.conv2d_forward(x.astype(np.float64), weight.astype(np.float64),
                                           None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    nan_direct, nan_winograd = np.isnan(expected), np.isnan(y)
    assert nan_direct.any() and not nan_winograd[0].any()
    assert np.all(nan_winograd[nan_direct])
    # ... and only within the 2x2 output tiles whose 4x4 input block holds the NaN.
    rows, cols = np.nonzero(nan_winograd[1].any(axis=0))
    assert rows.min() >= 2 and rows.max() <= 5 and cols.min() >= 2 and cols.max() <= 5


@pytest.mark.parametrize("pads,hw", [((1, 1, 1, 1), (32, 32)), ((1, 1, 1, 1), (16, 16)),
                                     ((1, 2, 1, 0), (11, 19)), ((2, 2, 2, 2), (6, 17)),
                                     ((0, 0, 0, 0), (7, 24))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_transform_from_a_padded_copy_equals_the_phases(pads, hw, dtype, rng):
    """Planes of 8 or more tiles a row are transformed from a padded copy
    (winograd._pad_plane, then winograd_blocks.input_tiles_padded for float32: blocks of 8
    tiles of one row, the last overlapping where a row is not whole blocks; winograd.
    _input_rows for float64): the same V as through the phases, bit for bit, every tile of
    the wide grid but its garbage last column, zeros there, and nothing written outside the
    plane's tiles."""
    from minicnn.kernels import winograd_blocks
    h, w = hw
    top, bottom, left, right = pads
    th, tw = (h + top + bottom - 1) // 2, (w + left + right - 1) // 2
    assert tw >= winograd.PADDED_MIN_TILES
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    pitch, per_sample = tw + 1, th * (tw + 1)
    phases = np.zeros((4, th + 2, pitch), dtype)
    rows = np.empty((8, per_sample + 1), dtype)
    padded = np.zeros((2 * th + 2) * 2 * pitch, dtype)
    capacity = 2 * per_sample + 5
    expected = np.full((16, 3, capacity), 7.0, dtype)
    got = expected.copy()
    rows_of = winograd_blocks.input_tiles_padded if dtype == np.float32 else winograd._input_rows
    for n in range(2):
        for c in range(3):
            winograd._split_phases(x, n, c, top, left, phases)
            winograd._input_transform(phases, c, n * per_sample, rows, expected)
            winograd._pad_plane(x, n, c, top, left, padded, 2 * pitch)
            rows_of(padded, 2 * pitch, th, tw, pitch, got.reshape(-1),
                    c * capacity + n * per_sample, 3 * capacity)
    garbage = np.zeros(capacity, bool)
    garbage[[n * per_sample + ty * pitch + tw for n in range(2) for ty in range(th)]] = True
    np.testing.assert_array_equal(got[:, :, ~garbage], expected[:, :, ~garbage])
    assert (got[:, :, garbage] == 0).all()


@pytest.mark.parametrize("hw", [(14, 14), (13, 11), (8, 8), (3, 5), (3, 3)])
def test_register_block_input_transform_equals_the_loops(hw, rng):
    """The float32 input transform in blocks of 8 tiles (winograd_blocks.input_tiles: 56, 49,
    20 and 8 tiles per plane, the last block overlapping the one before where they are not
    whole blocks; 6 tiles one at a time) gives the loops' V bit for bit, and writes nothing
    outside its plane's tiles."""
    from minicnn.kernels import winograd_blocks
    h, w = hw
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    th, tw = (h + 1) // 2, (w + 1) // 2     # padding 1: outputs of the input's size
    pitch, per_sample = tw + 1, th * (tw + 1)
    phases = np.zeros((4, th + 2, pitch), np.float32)
    rows = np.empty((8, per_sample + 1), np.float32)
    capacity = 2 * per_sample + 5
    expected = np.full((16, 3, capacity), 7.0, np.float32)
    got = expected.copy()
    for n in range(2):
        for c in range(3):
            winograd._split_phases(x, n, c, 1, 1, phases)
            winograd._input_transform(phases, c, n * per_sample, rows, expected)
            winograd_blocks.input_tiles(phases.reshape(-1), (th + 2) * pitch, pitch,
                                        per_sample, got.reshape(-1),
                                        c * capacity + n * per_sample, 3 * capacity)
    np.testing.assert_array_equal(got, expected)
