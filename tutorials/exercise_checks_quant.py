"""The checks and library versions behind tutorial 17 (int8 quantization).

Tutorial plumbing, not part of minicnn, in the style of ``exercise_checks.py``: each
``check_*`` takes the learner's function, runs it on small cases chosen to catch the usual
mistakes (floor or truncation instead of rounding, a missing or negated zero point, no
saturation, 8-bit arithmetic that wraps around, a product that overflows int32, a shift
without its rounding term) and raises ``AssertionError`` saying which case and what is wrong;
each ``library_*`` function is what the tutorial carries on with until the learner's version
passes (see ``tutorial_tools.check_exercise``).

Only NumPy here: the checks hold the learner to the arithmetic as written in the tutorial,
which is also what ``minicnn.quant.arithmetic`` computes (``tests/test_tutorial_exercises_quant.py``
compares the two).

Rounding. ``quantize`` rounds to the nearest integer, ties to even (``np.rint``, as ONNX's
QuantizeLinear does); ``requantize`` adds half of the divisor before its right shift, which
rounds ties up. The checks never feed an exact tie, so a learner who rounds ties another way
is not failed for it.
"""

from __future__ import annotations

import numpy as np

from tutorial_tools import compare


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


# --------------------------------------------------------------------------------------------
# quantize and dequantize


def library_quantize(x, scale: float, zero_point: int, dtype) -> np.ndarray:
    """``q = clip(round(x / scale) + zero_point, qmin, qmax)`` as ``dtype`` (uint8 or int8).

    ``x`` any float array; rounding to nearest, ties to even; values beyond the representable
    range saturate at ``qmin`` / ``qmax`` instead of wrapping around. Same shape as ``x``.
    """
    low, high = _limits(dtype)
    # float32, as minicnn.quant.arithmetic.quantize and ONNX Runtime divide (the checks keep
    # away from ties, so a learner who divides in float64 gets the same integers).
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, low, high).astype(dtype)


def library_dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """``x = scale * (q - zero_point)`` as float32, the difference taken in int32 (no wrap)."""
    return (np.float32(scale) * (np.asarray(q).astype(np.int32) - np.int32(zero_point))
            ).astype(np.float32)


def _away_from_ties(values: np.ndarray, scale: float) -> np.ndarray:
    """Nudge values whose ``x / scale`` lies within 1e-3 of a half-integer (a tie) or of a
    non-zero integer (where float32 and float64 division may floor differently), so that every
    right rounding agrees and every wrong one is told apart; zero stays exactly zero."""
    steps = values / scale
    fraction = steps - np.floor(steps)
    near = (np.abs(fraction - 0.5) < 1e-3) | (np.minimum(fraction, 1 - fraction) < 1e-3)
    return np.where(near & (values != 0), values + 0.01 * scale, values)


def _quantize_cases():
    rng = _rng(17)
    cases = []
    # name, x, scale, zero_point, dtype, in_range (a boolean mask: False where x saturates)
    x = np.concatenate([[0.0, 0.02 * 5.3, -0.02 * 7.8], rng.uniform(-2.2, 2.8, 60)])
    cases.append(("uint8, scale 0.02, zero point 113, values inside the range", x, 0.02, 113,
                  np.uint8))
    x = np.concatenate([[0.0], rng.uniform(-1.25, 1.25, 50)])
    cases.append(("int8, symmetric: scale 0.01, zero point 0", x, 0.01, 0, np.int8))
    x = np.concatenate([[0.0], rng.uniform(-0.5, 1.9, 50)])
    cases.append(("int8, scale 0.01, zero point -60", x, 0.01, -60, np.int8))
    x = np.concatenate([[0.0, -10.0, 9.0, 40.0, -3.0], rng.uniform(-4.0, 7.0, 40)])
    cases.append(("uint8, scale 0.02, zero point 113, values beyond the range (saturate)", x,
                  0.02, 113, np.uint8))
    x = np.concatenate([[0.0, -5.0, 5.0, 1.3, -1.3], rng.uniform(-2.0, 2.0, 40)])
    cases.append(("int8, scale 0.01, zero point 0, values beyond the range (saturate)", x, 0.01,
                  0, np.int8))
    shaped = rng.uniform(-1.0, 1.5, (2, 3, 4, 5))
    cases.append(("a (2, 3, 4, 5) array, uint8, scale 0.01, zero point 100", shaped, 0.01, 100,
                  np.uint8))
    result = []
    for name, values, scale, zero_point, dtype in cases:
        values = _away_from_ties(np.asarray(values, dtype=np.float64), scale).astype(np.float32)
        low, high = _limits(dtype)
        steps = np.rint(values.astype(np.float64) / scale) + zero_point
        result.append((name, values, scale, zero_point, dtype, (steps >= low) & (steps <= high)))
    return result


def _first_difference(got, expected, x=None) -> str:
    wrong = np.flatnonzero(got.ravel().astype(np.int64) != expected.ravel().astype(np.int64))
    index = int(wrong[0])
    where = np.unravel_index(index, expected.shape)
    at = f" (x = {float(x.ravel()[index]):.5g})" if x is not None else ""
    return (f"{wrong.size} of {expected.size} values differ; the first at index "
            f"{tuple(int(i) for i in where)}{at}: got {got.ravel()[index]}, expected "
            f"{expected.ravel()[index]}")


def _quantize_diagnosis(got, x, scale, zero_point, dtype, in_range) -> str:
    """Which plausible mistake ``got`` matches, judged on the values inside the range."""
    steps = x.astype(np.float64) / scale
    mistakes = [
        (np.floor(steps) + zero_point, "it rounds down (floor): round to the nearest integer "
                                       "(np.rint or np.round), so the error is at most half a "
                                       "step"),
        (np.trunc(steps) + zero_point, "it truncates toward zero (astype(int) without "
                                       "rounding first): round to the nearest integer, then "
                                       "cast"),
        (np.ceil(steps) + zero_point, "it rounds up (ceil): round to the nearest integer"),
        (np.rint(steps), "the zero point is missing: q = round(x / scale) + zero_point"),
        (np.rint(steps) - zero_point, "the zero point has the wrong sign: it is *added* to "
                                      "round(x / scale)"),
        (np.rint(x.astype(np.float64) * scale) + zero_point, "it multiplies by the scale: "
                                                             "quantizing divides by it"),
    ]
    low, high = _limits(dtype)
    if np.any(in_range):
        mine = got[in_range].astype(np.int64)
        for wrong, why in mistakes:
            wrong = np.clip(wrong, low, high)       # judged on the rounding, not the clamp
            if "zero point" in why and zero_point == 0:
                continue                    # indistinguishable from the right answer here
            if np.array_equal(mine, wrong[in_range].astype(np.int64)):
                return why
    return ""


def check_quantize(fn) -> None:
    """``fn(x, scale, zero_point, dtype) -> q``: the nearest grid point, saturated, stored in
    ``dtype``; checked on uint8 and int8, symmetric and asymmetric, inside and beyond the
    range, and a 4-d array."""
    for name, x, scale, zero_point, dtype, in_range in _quantize_cases():
        what = f"quantize, case '{name}'"
        original = x.copy()
        got = fn(x, scale, zero_point, dtype)
        if got is None:
            raise AssertionError(f"{what}: got None -- did the function forget to return q?")
        if not np.array_equal(x, original):
            raise AssertionError(f"{what}: it changed its input x; compute into a new array")
        got = np.asarray(got)
        if got.shape != x.shape:
            raise AssertionError(f"{what}: shape {got.shape}, expected {x.shape} (one q per x)")
        if got.dtype != np.dtype(dtype):
            raise AssertionError(
                f"{what}: dtype {got.dtype}, expected {np.dtype(dtype).name}: a quantized value "
                f"is stored in 8 bits (clip to the range, then .astype(dtype))")
        expected = library_quantize(x, scale, zero_point, dtype)
        if np.array_equal(got, expected):
            continue
        diagnosis = _quantize_diagnosis(got, x, scale, zero_point, dtype, in_range)
        if not diagnosis and np.array_equal(got[in_range], expected[in_range]):
            low, high = _limits(dtype)
            diagnosis = (f"inside the range it is right, but values beyond it must saturate at "
                         f"{low} or {high} (np.clip before the cast); a cast of an out-of-range "
                         f"number wraps around or is undefined")
        raise AssertionError(f"{what}: {_first_difference(got, expected, x)}"
                             + (f" -- {diagnosis}" if diagnosis else ""))


def _dequantize_cases():
    rng = _rng(18)
    every_uint8 = np.arange(256, dtype=np.int64).astype(np.uint8)
    every_int8 = np.arange(-128, 128, dtype=np.int64).astype(np.int8)
    return [
        ("every uint8, scale 0.05, zero point 200", every_uint8, 0.05, 200),
        ("every int8, scale 0.01, zero point 0", every_int8, 0.01, 0),
        ("every int8, scale 0.02, zero point -3", every_int8, 0.02, -3),
        ("a (2, 3, 4) uint8 array, scale 0.1, zero point 7",
         rng.integers(0, 256, (2, 3, 4)).astype(np.uint8), 0.1, 7),
    ]


def check_dequantize(fn) -> None:
    """``fn(q, scale, zero_point) -> x``: float32 ``scale * (q - zero_point)``, the difference
    taken wide enough not to wrap around."""
    for name, q, scale, zero_point in _dequantize_cases():
        what = f"dequantize, case '{name}'"
        original = q.copy()
        with np.errstate(over="ignore"):
            got = fn(q, scale, zero_point)
        if got is None:
            raise AssertionError(f"{what}: got None -- did the function forget to return x?")
        if not np.array_equal(q, original) or q.dtype != original.dtype:
            raise AssertionError(f"{what}: it changed its input q; compute into a new array")
        got = np.asarray(got)
        if got.shape == q.shape and got.dtype != np.float32:
            raise AssertionError(f"{what}: dtype {got.dtype}, expected float32 (what the "
                                 f"network's float layers take)")
        expected = library_dequantize(q, scale, zero_point)
        if got.shape == expected.shape and np.all(np.isfinite(got)) and np.allclose(
                got, expected, rtol=1e-6, atol=1e-6 * scale):
            continue
        if got.shape == expected.shape and np.all(np.isfinite(got)):
            hint = ""
            narrow = np.asarray(q - np.array(zero_point).astype(q.dtype), dtype=q.dtype)
            if zero_point and np.allclose(got, scale * q.astype(np.float64), rtol=1e-6,
                                          atol=1e-7):
                hint = "the zero point is missing: x = scale * (q - zero_point)"
            elif zero_point and np.allclose(got, scale * (q.astype(np.float64) + zero_point),
                                            rtol=1e-6, atol=1e-7):
                hint = "the zero point has the wrong sign: x = scale * (q - zero_point)"
            elif np.allclose(got, scale * narrow.astype(np.float64), rtol=1e-6, atol=1e-7):
                hint = (f"q - zero_point was computed in {q.dtype} and wrapped around: convert "
                        f"q to int32 (or float32) before subtracting")
            elif np.allclose(got, q.astype(np.float64) / scale - zero_point, rtol=1e-6,
                             atol=1e-7) or np.allclose(got, (q.astype(np.float64) - zero_point)
                                                       / scale, rtol=1e-6, atol=1e-7):
                hint = "it divides by the scale: dequantizing multiplies by it"
            if hint:
                raise AssertionError(f"{what}: {hint}")
        compare(what, got, expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# requantize: int32 accumulator -> uint8 activation, in integer arithmetic only


def library_quantize_multiplier(real: float) -> tuple[int, int]:
    """``(multiplier, shift)`` with ``real ~= multiplier * 2**-(31 + shift)`` and the
    multiplier in ``[2**30, 2**31)`` (31 significant bits; gemmlowp's and TFLite's form);
    ``0 < real < 1``, so ``shift >= 0``."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"quantize_multiplier: expected 0 < real < 1, got {real!r}")
    mantissa, exponent = np.frexp(real)                 # real = mantissa * 2**exponent
    multiplier = int(round(float(mantissa) * (1 << 31)))
    if multiplier == 1 << 31:                           # the mantissa rounded up to 1.0
        multiplier //= 2
        exponent += 1
    return multiplier, -int(exponent)


def library_requantize(acc, multiplier: int, shift: int, zero_point: int) -> np.ndarray:
    """``clip(zero_point + round(acc * multiplier / 2**(31 + shift)), 0, 255)`` as uint8.

    ``acc``: int32 accumulators, any shape. The product is taken in int64 (an int32 times a
    31-bit multiplier needs up to 62 bits); adding ``2**(30 + shift)``, half the divisor,
    before the arithmetic right shift by ``31 + shift`` rounds to nearest (a bare ``>>``
    rounds toward minus infinity).
    """
    total = np.int64(31 + shift)
    product = np.asarray(acc).astype(np.int64) * np.int64(multiplier)
    rounded = (product + (np.int64(1) << (total - 1))) >> total
    return np.clip(rounded + zero_point, 0, 255).astype(np.uint8)


def _requantize_cases():
    rng = _rng(19)
    cases = []
    # name, acc (int32), real multiplier, zero point
    acc = rng.integers(-20_000, 60_000, 200).astype(np.int32)
    cases.append(("accumulators up to 6e4, multiplier 0.0037, zero point 0", acc, 0.0037, 0))
    acc = rng.integers(-9_000, 9_000, 200).astype(np.int32)
    cases.append(("accumulators up to 9e3, multiplier 0.011, zero point 90", acc, 0.011, 90))
    acc = np.concatenate([[-2_000_000, -60_000, 0, 60_000, 2_000_000],
                          rng.integers(-70_000, 70_000, 100)]).astype(np.int32)
    cases.append(("accumulators beyond the uint8 range (clamp), multiplier 0.002, "
                  "zero point 30", acc, 0.002, 30))
    acc = rng.integers(-2**30, 2**30, 100).astype(np.int32)
    cases.append(("accumulators up to 1e9 (the product needs int64), multiplier 1.1e-7, "
                  "zero point 128", acc, 1.1e-7, 128))
    acc = rng.integers(-3000, 3000, (2, 4, 3, 3)).astype(np.int32)
    cases.append(("a (2, 4, 3, 3) array, multiplier 0.04, zero point 5", acc, 0.04, 5))
    result = []
    for name, acc, real, zero_point in cases:
        multiplier, shift = library_quantize_multiplier(real)
        # No exact ties: the checks accept any rule for them (ties up, away from zero, to even).
        total = 31 + shift
        remainder = (acc.astype(np.int64) * multiplier) & ((1 << total) - 1)
        acc = np.where(remainder == 1 << (total - 1), acc + 1, acc).astype(np.int32)
        result.append((name, acc, multiplier, shift, zero_point))
    return result


def check_requantize(fn) -> None:
    """``fn(acc, multiplier, shift, zero_point) -> q``: uint8
    ``clip(zero_point + round(acc * multiplier / 2**(31 + shift)), 0, 255)`` in integer
    arithmetic;
    checked for rounding, the zero point, the clamp and int64 products."""
    for name, acc, multiplier, shift, zero_point in _requantize_cases():
        what = f"requantize, case '{name}' (multiplier {multiplier}, shift {shift})"
        original = acc.copy()
        with np.errstate(over="ignore"):
            got = fn(acc, multiplier, shift, zero_point)
        if got is None:
            raise AssertionError(f"{what}: got None -- did the function forget to return q?")
        if not np.array_equal(acc, original) or acc.dtype != original.dtype:
            raise AssertionError(f"{what}: it changed its input acc; compute into a new array")
        got = np.asarray(got)
        if got.shape != acc.shape:
            raise AssertionError(f"{what}: shape {got.shape}, expected {acc.shape}")
        if got.dtype != np.uint8:
            raise AssertionError(f"{what}: dtype {got.dtype}, expected uint8 (clip to [0, 255], "
                                 f"then .astype(np.uint8))")
        expected = library_requantize(acc, multiplier, shift, zero_point)
        if np.array_equal(got, expected):
            continue
        total = 31 + shift
        wide = acc.astype(np.int64) * multiplier
        nearest = (wide + (1 << (total - 1))) >> total
        floor = wide >> total
        inside = (nearest + zero_point >= 0) & (nearest + zero_point <= 255)
        mine = got.astype(np.int64)
        diagnosis = ""
        if np.array_equal(mine[inside], np.clip(floor + zero_point, 0, 255)[inside]):
            diagnosis = (f"the rounding term is missing: a bare >> rounds toward minus infinity; "
                         f"add half the divisor, 1 << (30 + shift) = {1 << (total - 1)}, before "
                         f"shifting")
        elif zero_point and np.array_equal(mine[inside], np.clip(nearest, 0, 255)[inside]):
            diagnosis = "the zero point is missing: add it after the shift"
        elif np.array_equal(mine[inside], expected.astype(np.int64)[inside]):
            diagnosis = ("inside [0, 255] it is right, but the result must be clamped to "
                         "[0, 255] before the cast to uint8 (a cast wraps around: 300 becomes 44)")
        elif np.abs(wide).max() > np.iinfo(np.int32).max:
            with np.errstate(over="ignore"):
                narrow = acc * np.int32(multiplier & 0x7FFFFFFF)      # what int32 computes
            if not np.array_equal(narrow.astype(np.int64), wide):
                diagnosis = (f"acc * multiplier reaches {int(np.abs(wide).max()):.3g}, beyond "
                             f"int32: take the product in int64 (acc.astype(np.int64))")
        raise AssertionError(f"{what}: {_first_difference(got, expected)}"
                             + (f" -- {diagnosis}" if diagnosis else ""))
