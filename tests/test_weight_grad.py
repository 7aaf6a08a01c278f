"""The shift path's running-sum weight gradient (minicnn.kernels.weight_grad.three_taps)
against its definition, on stacked buffers and grids of its own (every output-channel
remainder of the blocks of four, dilated rows, float32 and float64)."""

import numpy as np
import pytest

from minicnn.kernels import weight_grad


def definition(xbuf, grid, span, kh, dh, row0, col0, pitch):
    """dWᵀ[i*3 + j, c, co] = Σ_{q < span} xbuf[c, (row0 + i*dh)*pitch + col0 + j + q] ·
    grid[co, q], in float64."""
    c_in, c_out = xbuf.shape[0], grid.shape[0]
    out = np.zeros((kh * 3, c_in, c_out))
    g = grid[:, :span].astype(np.float64)
    for i in range(kh):
        for j in range(3):
            at = (row0 + i * dh) * pitch + col0 + j
            out[i * 3 + j] = xbuf[:, at:at + span].astype(np.float64) @ g.T
    return out


@pytest.mark.parametrize("c_out", [1, 3, 4, 6, 9, 16])
@pytest.mark.parametrize("kh, dh", [(3, 1), (1, 1), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_three_taps_is_the_definition(c_out, kh, dh, dtype, rng):
    c_in, pitch, row0, col0, span = 5, 23, 1, 2, 517
    length = (row0 + (kh - 1) * dh) * pitch + col0 + 2 + span + 7
    xbuf = rng.standard_normal((c_in, length)).astype(dtype)
    grid = rng.standard_normal((c_out, span + 11)).astype(dtype)
    grid[:, span:] = np.nan          # past the span: never read
    start = rng.standard_normal((kh * 3, c_in, c_out)).astype(dtype)
    dw = start.copy()
    weight_grad.three_taps(xbuf, grid, span, kh, dh, row0, col0, pitch, dw)
    expected = start + definition(xbuf, grid, span, kh, dh, row0, col0, pitch)
    # float32 sums of 517 products of standard normals: |error| ~ 1e-5 of sqrt(517) ~ 23
    tolerance = 2e-4 * np.sqrt(span) if dtype == np.float32 else 1e-9 * np.sqrt(span)
    np.testing.assert_allclose(dw, expected, rtol=0, atol=tolerance)


def test_a_nan_in_the_input_reaches_the_gradient(rng):
    """Only reassociation and contraction are allowed: NaN still propagates."""
    xbuf = rng.standard_normal((2, 200)).astype(np.float32)
    grid = rng.standard_normal((4, 100)).astype(np.float32)
    xbuf[1, 50] = np.nan
    dw = np.zeros((3, 2, 4), np.float32)
    weight_grad.three_taps(xbuf, grid, 100, 1, 1, 0, 0, 10, dw)
    assert np.isnan(dw[:, 1]).all() and np.isfinite(dw[:, 0]).all()
