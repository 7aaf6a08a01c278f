"""Winograd's F(4x4, 3x3) pieces (minicnn.kernels.winograd4) against the definition.

The phase split, the input transform's register blocks, the 36 products and the output
transform are driven here one plane at a time, as the inference plan's step drives them,
and compared with the direct sum in float64. Measured worst difference over these shapes
and seeds: 5e-6 of the output's largest magnitude (F(2x2, 3x3): about 2e-7); the tests allow
5e-5. The plan's step itself is checked against the layers in test_inference_plan.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.kernels import winograd4 as W
from minicnn.kernels.winograd_blocks import products

RTOL = 5e-5


def _direct(x, weight, pad):
    """The definition, in float64: ``x`` (N, C, H, W), ``weight`` (C_out, C, 3, 3)."""
    n, _, h, w = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    y = np.zeros((n, weight.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", padded[:, :, i:i + oh, j:j + ow],
                           weight[:, :, i, j].astype(np.float64))
    return y


def _winograd4(x, weight, pad, octet=False):
    """The convolution through the pieces, all samples in one chunk (``octet``: 8 samples
    side by side, :func:`~minicnn.kernels.winograd4.sample_tiles`), scratch filled with NaN
    where the step would leave it uninitialised (garbage lanes must never be read back)."""
    g, c_in, h, w = x.shape
    c_out = weight.shape[0]
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    tiles_h, tiles_w, pitch = W.tiles_of(oh, ow)
    per_sample = tiles_h * pitch
    tiles = 8 * tiles_h * tiles_w if octet else g * per_sample
    capacity = -(-(tiles + W.TILES) // 24) * 24
    planes = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    phase_size = (tiles_h + 2) * pitch
    phases = np.zeros(W.phases_size(tiles_h, pitch), np.float32)
    v = np.full(W.POSITIONS * c_in * capacity, np.nan, np.float32)
    for c in range(c_in):
        for s in range(g):
            if octet:
                W.split_phases(planes[c, s], pad, pad, phases, phase_size, pitch, 8, s)
            else:
                W.split_phases(planes[c, s], pad, pad, phases, phase_size, pitch, 1, 0)
                W.input_tiles(phases, phase_size, pitch, per_sample, v,
                              c * capacity + s * per_sample, c_in * capacity)
        if octet:
            W.sample_tiles(phases, phase_size, tiles_h, tiles_w, pitch, v, c * capacity,
                           c_in * capacity)
    u = np.full(W.POSITIONS * c_out * c_in, np.nan, np.float32)
    W.filters_into(np.ascontiguousarray(weight).reshape(-1), c_out, c_in, u)
    m = np.full(W.POSITIONS * c_out * capacity, np.nan, np.float32)
    products(v, u, m, c_in, c_out, capacity, tiles, 0, c_out, W.POSITIONS)
    y = np.empty((g, c_out, oh, ow), np.float32)
    image = np.full(16 * capacity, np.nan, np.float32)
    for co in range(c_out):
        W.output_tiles(m, co * capacity, c_out * capacity, tiles, image, 4 * capacity)
        rows = image.reshape(4, 4 * capacity)
        for s in range(g):
            for oy in range(oh):
                if octet:       # tile (ty, tx) of sample s at column 8 (ty tiles_w + tx) + s
                    for ox in range(ow):
                        at = 4 * (8 * ((oy // 4) * tiles_w + ox // 4) + s) + ox % 4
                        y[s, co, oy, ox] = rows[oy % 4, at]
                else:
                    at = 4 * (s * per_sample + (oy // 4) * pitch)
                    y[s, co, oy] = rows[oy % 4, at:at + ow]
    return y


@pytest.mark.parametrize("shape", [
    (2, 16, 8, 8, 8, 1),      # ResNet-20's last stage: 6 tiles a sample, under one block
    (1, 16, 16, 32, 32, 1),   # 72 tiles: 9 whole blocks
    (3, 5, 7, 9, 13, 1),      # partial tiles on both sides, channels not a multiple of 4
    (2, 4, 3, 10, 6, 0),      # no padding
    (1, 3, 2, 3, 3, 0),       # a 1x1 output: one tile, three quarters garbage
    (4, 8, 4, 21, 11, 1),     # a last block overlapping the one before
])
def test_pieces_equal_the_definition(shape):
    g, c_in, c_out, h, w, pad = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((g, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    expected = _direct(x, weight, pad)
    got = _winograd4(x, weight, pad)
    assert not np.isnan(got).any()
    worst = np.abs(got - expected).max() / np.abs(expected).max()
    assert worst <= RTOL, worst


@pytest.mark.parametrize("shape", [
    (8, 16, 8, 8, 8, 1),      # ResNet-20's last stage: 4 positions, 32 tiles, no garbage
    (8, 5, 7, 9, 13, 1),      # partial tiles on both sides
    (8, 4, 3, 10, 6, 0),      # no padding
])
def test_eight_samples_side_by_side_equal_the_definition(shape):
    """The samples-innermost layout: each block's 8 lanes are 8 samples' tiles at one
    position; every tile's transforms and sums are the wide grid's, so the two layouts give
    the same bits."""
    g, c_in, c_out, h, w, pad = shape
    rng = np.random.default_rng(sum(shape) + 1)
    x = rng.standard_normal((g, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    expected = _direct(x, weight, pad)
    got = _winograd4(x, weight, pad, octet=True)
    assert not np.isnan(got).any()
    assert np.abs(got - expected).max() / np.abs(expected).max() <= RTOL
    np.testing.assert_array_equal(got, _winograd4(x, weight, pad))


def test_filter_transform_is_g_g_gt():
    """U = G g Gᵀ with the matrices of the module's docstring, in the (36, C_out, C_in) order."""
    g_matrix = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    weight = np.random.default_rng(3).standard_normal((3, 2, 3, 3)).astype(np.float32)
    u = np.empty(36 * 6, np.float32)
    W.filters_into(weight.reshape(-1), 3, 2, u)
    expected = np.einsum("ik,ockl,jl->ijoc", g_matrix, weight.astype(np.float64), g_matrix)
    np.testing.assert_allclose(u.reshape(6, 6, 3, 2), expected, rtol=1e-6, atol=1e-7)


def test_a_nan_input_reaches_its_tiles_only():
    """A NaN in the input reaches the outputs of the tiles whose 6x6 block holds it, never a
    tile that does not read it (the garbage lanes and padding stay out of the sums)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    x[0, 2, 1, 1] = np.nan          # padded (2, 2): only the first tile's block holds it
    got = _winograd4(x, weight, 1)
    assert np.isnan(got[:, :, :4, :4]).all()
    assert not np.isnan(got[:, :, 4:, :]).any() and not np.isnan(got[:, :, :, 4:]).any()


# --------------------------------------------------------------------------------------------
# The one-pool (training) forward and input gradient
# --------------------------------------------------------------------------------------------
@pytest.fixture
def count_transforms(monkeypatch):
    """How many times the F(4x4, 3x3) filters were transformed (one per forward or input
    gradient it ran)."""
    calls = []
    original = W.transform_weights

    def counting(weight):
        calls.append(weight.shape)
        return original(weight)

    monkeypatch.setattr(W, "transform_weights", counting)
    return calls


@pytest.mark.parametrize("shape", [
    (19, 64, 32, 8, 8, 1),    # octets of samples side by side, then the rest on the wide grid
    (3, 64, 64, 9, 13, 1),    # partial tiles on both sides, fewer than 8 samples
    (2, 64, 8, 10, 12, 0),    # no padding (no Winograd input gradient then)
])
def test_one_pool_forward_and_input_gradient(shape, count_transforms, monkeypatch):
    """conv2d_forward (plain and with its ReLU) and the input gradient run F(4x4, 3x3) where a
    layer has 64 input channels (for the input gradient: 64 output channels) and an output
    of at least 8x8, and agree with the definition in float64; the weight gradient is the
    shift path's either way (the same bits)."""
    from minicnn.kernels import onepool
    n, c_in, c_out, h, w, pad = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    expected = _direct(x, weight, pad) + bias[None, :, None, None]
    scale = np.abs(expected).max()
    y, ctx = onepool.conv2d_forward(x, weight, bias, (1, 1), (pad,) * 4, (1, 1))
    assert len(count_transforms) == 1
    assert np.abs(y - expected).max() / scale <= RTOL
    relu, _, _, _ = onepool.conv2d_relu_forward(x, weight, bias, (1, 1), (pad,) * 4, (1, 1))
    assert np.abs(relu - np.maximum(expected, 0)).max() / scale <= RTOL
    assert len(count_transforms) == 2
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, _ = onepool.conv2d_backward(dy, ctx)
    monkeypatch.setattr(onepool, "USE_WINOGRAD4", False)
    dx_f2, dw_f2, _ = onepool.conv2d_backward(dy, ctx)
    np.testing.assert_array_equal(dw, dw_f2)
    if pad == 1 and c_out >= 64:        # the input gradient through F(4x4, 3x3)
        assert len(count_transforms) == 3
        flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        dx_expected = _direct(dy, np.ascontiguousarray(flipped), 1)
        assert np.abs(dx - dx_expected).max() / np.abs(dx_expected).max() <= RTOL
    else:
        assert len(count_transforms) == 2
        np.testing.assert_array_equal(dx, dx_f2)


def test_one_pool_keeps_f2x2_where_f4x4_does_not_apply(count_transforms):
    """A pooled epilogue (F(2x2, 3x3) pools inside its transform), fewer than 64 input
    channels, an output under 8x8 and float64 never reach F(4x4, 3x3)."""
    from minicnn.kernels import onepool
    rng = np.random.default_rng(5)
    cases = [((2, 64, 8, 8), (16, 64), np.float32, True),
             ((2, 32, 8, 8), (16, 32), np.float32, False),
             ((2, 64, 6, 6), (16, 64), np.float32, False),
             ((2, 64, 8, 8), (16, 64), np.float64, False)]
    for x_shape, w_shape, dtype, pooled in cases:
        x = rng.standard_normal(x_shape).astype(dtype)
        weight = rng.standard_normal(w_shape + (3, 3)).astype(dtype)
        if pooled:
            onepool.conv2d_relu_forward(x, weight, None, (1, 1), (1,) * 4, (1, 1),
                                        maxpool=True)
        else:
            onepool.conv2d_forward(x, weight, None, (1, 1), (1,) * 4, (1, 1))
    assert count_transforms == []
