"""The exercises of tutorial 17 (int8 quantization): the checks in
``tutorials/exercise_checks_quant.py``.

Every check must accept the worked solution, the library version and another right variant
written differently, and reject the mistakes learners really make (floor or truncation
instead of rounding, a missing or negated zero point, no saturation, 8-bit arithmetic that
wraps, a shift without its rounding term, an int32 product that overflows) with a message
that names what is wrong. The tutorial's NumPy versions must also compute what
``minicnn.quant.arithmetic`` computes, so the tutorial teaches the library's arithmetic.
Fast unit tests: they import the checks, they do not run the tutorial.
"""

from __future__ import annotations

import numpy as np
import pytest

# tutorial_helpers puts tutorials/ on sys.path, so the imports below find its modules.
from tutorial_helpers import rejects as _rejects, solution as _solution

import exercise_checks_quant as ec  # noqa: E402


quantize = _solution("17_making_it_small", "quantize")
dequantize = _solution("17_making_it_small", "dequantize")
requantize = _solution("17_making_it_small", "requantize")

EXERCISES = {
    "quantize": (ec.check_quantize, quantize, ec.library_quantize),
    "dequantize": (ec.check_dequantize, dequantize, ec.library_dequantize),
    "requantize": (ec.check_requantize, requantize, ec.library_requantize),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_check_accepts_the_solution_and_the_library(name):
    check, solution, library = EXERCISES[name]
    check(solution)
    check(library)


# ---- quantize ------------------------------------------------------------------------------

def test_quantize_check_accepts_another_right_variant():
    def round_half_away_then_clip_in_float32(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        steps = np.asarray(x, np.float32) / np.float32(scale)
        rounded = np.sign(steps) * np.floor(np.abs(steps) + 0.5)   # ties away from zero
        return np.minimum(np.maximum(rounded + zero_point, info.min), info.max).astype(dtype)
    ec.check_quantize(round_half_away_then_clip_in_float32)


def test_quantize_check_rejects_floor():
    def floor(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        return np.clip(np.floor(x / scale) + zero_point, info.min, info.max).astype(dtype)
    _rejects(ec.check_quantize, floor, "zero point 113, values inside the range", "differ",
             "rounds down (floor)")


def test_quantize_check_rejects_truncation():
    def truncate(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        return np.clip((x / scale).astype(np.int64) + zero_point, info.min,
                       info.max).astype(dtype)
    _rejects(ec.check_quantize, truncate, "values inside the range", "truncates toward zero")


def test_quantize_check_rejects_a_missing_zero_point():
    def no_zero_point(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x / scale), info.min, info.max).astype(dtype)
    _rejects(ec.check_quantize, no_zero_point, "zero point 113", "zero point is missing")


def test_quantize_check_rejects_a_subtracted_zero_point():
    def minus(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x / scale) - zero_point, info.min, info.max).astype(dtype)
    _rejects(ec.check_quantize, minus, "zero point 113", "wrong sign")


def test_quantize_check_rejects_no_saturation():
    def wraps(x, scale, zero_point, dtype):
        return (np.rint(x / scale) + zero_point).astype(np.int64).astype(dtype)
    _rejects(ec.check_quantize, wraps, "beyond the range (saturate)", "must saturate at 0 or 255")


def test_quantize_check_rejects_a_float_result_and_a_changed_input():
    def floats(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x / scale) + zero_point, info.min, info.max)
    _rejects(ec.check_quantize, floats, "dtype float", "expected uint8")

    def in_place(x, scale, zero_point, dtype):
        x /= scale
        return quantize(x * scale, scale, zero_point, dtype)
    _rejects(ec.check_quantize, in_place, "changed its input")


def test_quantize_check_rejects_multiplying_by_the_scale():
    def times(x, scale, zero_point, dtype):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x * scale) + zero_point, info.min, info.max).astype(dtype)
    _rejects(ec.check_quantize, times, "multiplies by the scale")


# ---- dequantize ----------------------------------------------------------------------------

def test_dequantize_check_accepts_another_right_variant():
    def in_float64(q, scale, zero_point):
        return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)
    ec.check_dequantize(in_float64)


def test_dequantize_check_rejects_8_bit_arithmetic_that_wraps():
    def narrow(q, scale, zero_point):
        return (scale * (q - q.dtype.type(zero_point))).astype(np.float32)
    _rejects(ec.check_dequantize, narrow, "every uint8", "computed in uint8 and wrapped around")


def test_dequantize_check_rejects_a_missing_or_negated_zero_point():
    def no_zero_point(q, scale, zero_point):
        return (scale * q.astype(np.float32)).astype(np.float32)
    _rejects(ec.check_dequantize, no_zero_point, "zero point 200", "zero point is missing")

    def plus(q, scale, zero_point):
        return (scale * (q.astype(np.float32) + zero_point)).astype(np.float32)
    _rejects(ec.check_dequantize, plus, "zero point 200", "wrong sign")


def test_dequantize_check_rejects_dividing_and_a_float64_result():
    def divides(q, scale, zero_point):
        return ((q.astype(np.float32) - zero_point) / scale).astype(np.float32)
    _rejects(ec.check_dequantize, divides, "divides by the scale")

    def float64(q, scale, zero_point):
        return scale * (q.astype(np.float64) - zero_point)
    _rejects(ec.check_dequantize, float64, "dtype float64", "expected float32")


# ---- requantize ----------------------------------------------------------------------------

def test_requantize_check_accepts_another_right_variant():
    def divide_with_python_ints(acc, multiplier, shift, zero_point):
        half, divisor = 1 << (30 + shift), 1 << (31 + shift)
        out = [min(255, max(0, (int(a) * multiplier + half) // divisor + zero_point))
               for a in acc.ravel()]
        return np.array(out, dtype=np.uint8).reshape(acc.shape)
    ec.check_requantize(divide_with_python_ints)


def test_requantize_check_rejects_a_missing_rounding_term():
    def floor(acc, multiplier, shift, zero_point):
        product = acc.astype(np.int64) * multiplier
        return np.clip((product >> (31 + shift)) + zero_point, 0, 255).astype(np.uint8)
    _rejects(ec.check_requantize, floor, "multiplier 0.0037", "rounding term is missing",
             "1 << (30 + shift)")


def test_requantize_check_rejects_a_missing_zero_point():
    def no_zero_point(acc, multiplier, shift, zero_point):
        return requantize(acc, multiplier, shift, 0)
    _rejects(ec.check_requantize, no_zero_point, "zero point 90", "zero point is missing")


def test_requantize_check_rejects_no_clamp():
    def wraps(acc, multiplier, shift, zero_point):
        product = acc.astype(np.int64) * multiplier
        rounded = (product + (1 << (30 + shift))) >> (31 + shift)
        return (rounded + zero_point).astype(np.uint8)
    _rejects(ec.check_requantize, wraps, "zero point", "clamped to [0, 255]")


def test_requantize_check_rejects_an_int32_product():
    def narrow(acc, multiplier, shift, zero_point):
        product = (acc * np.int32(multiplier)).astype(np.int64)        # wraps in int32
        rounded = (product + (1 << (30 + shift))) >> (31 + shift)
        return np.clip(rounded + zero_point, 0, 255).astype(np.uint8)
    _rejects(ec.check_requantize, narrow, "differ", "int64")


def test_requantize_check_rejects_a_float_result():
    def floats(acc, multiplier, shift, zero_point):
        return np.clip(np.rint(acc * (multiplier / 2.0 ** (31 + shift))) + zero_point, 0, 255)
    _rejects(ec.check_requantize, floats, "dtype float64", "expected uint8")


# ---- the tutorial's NumPy arithmetic is the library's ---------------------------------------

def test_library_versions_match_minicnn_quant_arithmetic():
    arithmetic = pytest.importorskip("minicnn.quant.arithmetic")
    rng = np.random.default_rng(0)
    for dtype, low, high in (("uint8", -1.3, 2.9), ("int8", -0.7, 0.4)):
        params = arithmetic.choose_params(low, high, dtype)
        x = rng.uniform(low - 1.0, high + 1.0, 500).astype(np.float32)
        expected = arithmetic.quantize(x, params)
        np.testing.assert_array_equal(
            ec.library_quantize(x, float(params.scale), int(params.zero_point),
                                np.dtype(dtype)), expected)
        np.testing.assert_allclose(
            ec.library_dequantize(expected, float(params.scale), int(params.zero_point)),
            arithmetic.dequantize(expected, params), rtol=1e-6, atol=1e-7)
    for real in (0.0037, 0.011, 0.002, 1.1e-7, 0.04, 0.5, 0.99999):
        multiplier, shift = arithmetic.quantize_multiplier(real)
        assert (int(multiplier), int(shift)) == ec.library_quantize_multiplier(real)
        acc = rng.integers(-2**24, 2**24, 400).astype(np.int32)
        np.testing.assert_array_equal(
            ec.library_requantize(acc, int(multiplier), int(shift), 17),
            arithmetic.requantize(acc, multiplier, shift, 17, "uint8"))
