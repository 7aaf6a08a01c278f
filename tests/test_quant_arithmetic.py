"""Properties of int8 arithmetic (minicnn.quant.arithmetic): scales and zero points, rounding,
saturation, fixed-point multipliers and integer requantization."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.quant.arithmetic import (QuantParams, choose_params, dequantize, quantize,
                                      quantize_multiplier, quantize_weights_per_channel,
                                      requantize)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
ranges = st.tuples(finite, finite).map(sorted).filter(lambda r: r[1] - r[0] > 1e-3)


@settings(max_examples=200, deadline=None)
@given(ranges, st.sampled_from(["uint8", "int8"]), st.booleans())
def test_zero_is_exactly_representable(bounds, dtype, symmetric):
    params = choose_params(*bounds, dtype=dtype, symmetric=symmetric)
    zero = quantize(np.zeros(1, np.float32), params)
    assert int(zero[0]) == params.zero_point
    assert dequantize(zero, params)[0] == 0.0


@settings(max_examples=200, deadline=None)
@given(ranges, st.sampled_from(["uint8", "int8"]), st.data())
def test_round_trip_error_at_most_half_a_step_inside_the_range(bounds, dtype, data):
    params = choose_params(*bounds, dtype=dtype)
    low = max(min(bounds[0], 0.0), params.scale * (params.qmin - params.zero_point))
    high = min(max(bounds[1], 0.0), params.scale * (params.qmax - params.zero_point))
    values = np.array(data.draw(st.lists(st.floats(low, high), min_size=1, max_size=20)),
                      dtype=np.float32)
    values = np.clip(values, low, high)
    back = dequantize(quantize(values, params), params)
    # Half a step, plus float32 rounding of x / scale and of the product.
    tolerance = params.scale * (0.5 + 1e-3) + 1e-6 * np.abs(values)
    assert np.all(np.abs(back - values) <= tolerance)


@settings(max_examples=100, deadline=None)
@given(ranges, st.sampled_from(["uint8", "int8"]))
def test_saturation_at_both_ends(bounds, dtype):
    params = choose_params(*bounds, dtype=dtype)
    far = np.array([-1e30, 1e30, -np.inf, np.inf], dtype=np.float32)
    q = quantize(far, params)
    assert q.dtype == np.dtype(dtype)
    assert q.tolist() == [params.qmin, params.qmax, params.qmin, params.qmax]


def test_choose_params_examples():
    p = choose_params(0.0, 2.55)                          # [0, 2.55] -> step 0.01, zero 0
    assert p.zero_point == 0 and math.isclose(p.scale, 0.01)
    p = choose_params(-1.0, 1.0)                          # zero in the middle of uint8
    assert p.zero_point == 128 and math.isclose(p.scale, 2 / 255)
    p = choose_params(1.0, 2.0)                           # widened to include 0
    assert p.zero_point == 0 and math.isclose(p.scale, 2 / 255)
    p = choose_params(-3.0, 1.0, dtype="int8", symmetric=True)
    assert p.zero_point == 0 and math.isclose(p.scale, 3 / 127)
    assert choose_params(0.0, 0.0).scale == 1.0
    with pytest.raises(ValueError, match="low <= high"):
        choose_params(2.0, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        choose_params(0, 1, dtype="int4")
    with pytest.raises(ValueError, match="zero_point"):
        QuantParams(0.1, 300, "uint8")


def test_quantize_rounds_half_to_even_like_onnx():
    params = QuantParams(1.0, 0, "int8")
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5], dtype=np.float32)
    assert quantize(x, params).tolist() == [0, 2, 2, 0, -2]


def test_per_channel_weights_are_symmetric_in_127():
    w = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [-0.1, 0.05, 0.1]], np.float32)
    q, scales = quantize_weights_per_channel(w)
    assert q.dtype == np.int8 and scales.dtype == np.float32
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0]
    assert np.abs(q).max() <= 127 and scales[1] == 1.0
    np.testing.assert_allclose(q * scales[:, None], w, atol=scales.max() / 2 + 1e-7)


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 1e6, allow_nan=False))
def test_quantize_multiplier_represents_the_real_closely(real):
    multiplier, shift = quantize_multiplier(real)
    assert 2 ** 30 <= multiplier < 2 ** 31
    value = multiplier * 2.0 ** -(31 + shift)
    assert abs(value - real) <= real * 2.0 ** -30


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0.5) == (2 ** 30, 0)
    assert quantize_multiplier(0.25) == (2 ** 30, 1)
    assert quantize_multiplier(1.0) == (2 ** 30, -1)
    with pytest.raises(ValueError):
        quantize_multiplier(-1.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-2 ** 31 + 1, 2 ** 31 - 1), min_size=1, max_size=30),
       st.floats(1e-6, 0.99), st.integers(0, 255), st.booleans())
def test_requantize_is_the_float_computation_within_one_unit(acc, real, zero, relu):
    acc = np.array(acc, dtype=np.int32)
    multiplier, shift = quantize_multiplier(real)
    low = zero if relu else 0
    q = requantize(acc, multiplier, shift, zero, "uint8", clamp_low=low)
    expected = np.clip(np.rint(acc.astype(np.float64) * real) + zero, low, 255)
    assert q.dtype == np.uint8
    assert np.all(np.abs(q.astype(np.int64) - expected) <= 1)


def test_requantize_exact_cases():
    # real 0.5: 7 * 0.5 = 3.5 rounds half up to 4; -7 * 0.5 = -3.5 rounds half up to -3.
    m, s = quantize_multiplier(0.5)
    assert requantize(np.array([7, -7, 6, 0]), m, s, 10).tolist() == [14, 7, 13, 10]
    # real 0.25, zero 0, ReLU clamps at the zero point; saturation at 255.
    m, s = quantize_multiplier(0.25)
    assert requantize(np.array([-100, 4, 5000]), m, s, 0, clamp_low=0).tolist() == [0, 1, 255]
    assert requantize(np.array([-100, 4]), m, s, 0, "int8").tolist() == [-25, 1]
    # Per channel multipliers broadcast.
    ms = np.array([quantize_multiplier(0.5), quantize_multiplier(0.125)])
    out = requantize(np.array([[8, 8]]), ms[:, 0], ms[:, 1], 0)
    assert out.tolist() == [[4, 1]]
