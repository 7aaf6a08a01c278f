"""The arithmetic of 8-bit quantization: scales, zero points, rounding, fixed-point multipliers.

A real tensor ``x`` is stored as integers ``q`` with one *scale* and one *zero point*::

    x ~= scale * (q - zero_point)        q = clamp(round(x / scale) + zero_point, qmin, qmax)

The zero point is the integer that stands for the real 0.0, which is therefore represented
exactly: a convolution's zero padding and ReLU's clamp cost no error. Activations use
``uint8`` (``[0, 255]``, asymmetric: the range ``[low, high]`` need not be centred on 0);
weights use ``int8`` symmetric per output channel in ``[-127, 127]`` with zero point 0 (-128
is left out so that ``-w`` is representable and products stay inside int16 sums).

Rounding, everywhere a real becomes an integer here:

* :func:`quantize` rounds half to even (``np.rint``), exactly as ONNX ``QuantizeLinear``, then
  saturates to the type's range.
* :func:`requantize` works in integers only: ``acc * multiplier`` as int64, then a right shift
  by ``31 + shift`` that rounds half *up* (towards +infinity: add ``2**(s-1)``, then an
  arithmetic shift), then the zero point is added and the result saturated. Round half up
  differs from the real value rounded half to even only on exact ties; the tests hold it to
  the float computation within one unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The integer range of each storage type.
RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
#: Weights are symmetric int8 in [-127, 127].
WEIGHT_MAX = 127


@dataclass(frozen=True)
class QuantParams:
    """How one tensor's reals map to integers: ``real = scale * (q - zero_point)``.

    Attributes
    ----------
    scale : float
        The real step between neighbouring integers (> 0).
    zero_point : int
        The integer that represents 0.0 (inside the dtype's range).
    dtype : {"uint8", "int8"}
    """

    scale: float
    zero_point: int
    dtype: str = "uint8"

    def __post_init__(self):
        if self.dtype not in RANGES:
            raise ValueError(f"QuantParams: dtype must be one of {sorted(RANGES)}, "
                             f"got {self.dtype!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"QuantParams: scale must be a finite number > 0, got {self.scale}")
        low, high = RANGES[self.dtype]
        if not low <= self.zero_point <= high:
            raise ValueError(f"QuantParams: zero_point must lie in [{low}, {high}] for "
                             f"{self.dtype}, got {self.zero_point}")

    @property
    def qmin(self) -> int:
        return RANGES[self.dtype][0]

    @property
    def qmax(self) -> int:
        return RANGES[self.dtype][1]

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "zero_point": int(self.zero_point),
                "dtype": self.dtype}


def choose_params(low: float, high: float, dtype: str = "uint8",
                  symmetric: bool = False) -> QuantParams:
    """The scale and zero point that cover the real range ``[low, high]``.

    The range is first widened to include 0 (so that 0.0 is an exact integer). Asymmetric: the
    ``qmax - qmin`` steps span ``[low, high]`` and the zero point is ``qmin - low / scale``
    rounded. Symmetric: the zero point is the middle of the type (0 for int8, 128 for uint8)
    and the scale covers ``max(|low|, |high|)`` on both sides.

    Returns
    -------
    QuantParams
        For a range of width 0 (all zeros), scale 1.0 and the zero point of a range [0, 0].
    """
    if dtype not in RANGES:
        raise ValueError(f"choose_params: dtype must be 'uint8' or 'int8', got {dtype!r}")
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"choose_params: need finite low <= high, got [{low}, {high}]")
    low, high = min(low, 0.0), max(high, 0.0)
    qmin, qmax = RANGES[dtype]
    if symmetric:
        bound = max(-low, high)
        # int8: [-127, 127] around 0; uint8: [1, 255] around 128 (the same 255 levels).
        zero = 0 if dtype == "int8" else 128
        scale = bound / 127.0 if bound > 0 else 1.0
        return QuantParams(scale, zero, dtype)
    if high == low:
        return QuantParams(1.0, 0 if dtype == "uint8" else 0, dtype)
    scale = (high - low) / (qmax - qmin)
    zero = int(np.clip(round(qmin - low / scale), qmin, qmax))
    return QuantParams(scale, zero, dtype)


def quantize(x, params: QuantParams) -> np.ndarray:
    """Reals -> integers of ``params.dtype``: ``clamp(rint(x / scale) + zero_point)``.

    ``rint`` rounds half to even, as ONNX ``QuantizeLinear``; values outside the range saturate
    at ``qmin`` / ``qmax``. Computed in float32 (``x / scale`` as ONNX Runtime does it) so
    that minicnn's quantised input equals ONNX Runtime's bit for bit.
    """
    x = np.asarray(x, dtype=np.float32)
    q = np.rint(x / np.float32(params.scale)) + np.float32(params.zero_point)
    return np.clip(q, params.qmin, params.qmax).astype(params.dtype)


def dequantize(q, params: QuantParams) -> np.ndarray:
    """Integers -> float32 reals: ``scale * (q - zero_point)``."""
    q = np.asarray(q)
    return (np.float32(params.scale)
            * (q.astype(np.int32) - np.int32(params.zero_point)).astype(np.float32))


def quantize_weights_per_channel(weight: np.ndarray):
    """Symmetric int8 weights with one scale per output channel (axis 0).

    Parameters
    ----------
    weight : ndarray (out_channels, ...)
        A convolution's ``(C_out, C_in, kH, kW)`` or a linear layer's ``(out, in)`` weight.

    Returns
    -------
    q : ndarray int8, the shape of ``weight``, values in [-127, 127]
    scales : ndarray float32 (out_channels,)
        ``max |w|`` of the channel / 127 (1.0 for a channel of zeros).
    """
    weight = np.asarray(weight, dtype=np.float64)
    flat = weight.reshape(weight.shape[0], -1)
    bound = np.abs(flat).max(axis=1) if flat.size else np.zeros(weight.shape[0])
    scales = np.where(bound > 0, bound / WEIGHT_MAX, 1.0).astype(np.float32)
    q = np.rint(flat / scales.astype(np.float64)[:, None])
    q = np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return q.reshape(weight.shape), scales


def quantize_multiplier(real: float) -> tuple[int, int]:
    """A real ``0 <= real < 2**30`` as ``(multiplier, shift)`` with
    ``real ~= multiplier * 2**-(31 + shift)`` and ``2**30 <= multiplier < 2**31`` (gemmlowp
    and TFLite's representation: 31 bits of mantissa, so the relative error is below 2**-31).

    ``shift`` is >= 0 for ``real < 1`` (a right shift), negative for ``real >= 1``. 0.0 is
    ``(0, 0)``.
    """
    real = float(real)
    if not (math.isfinite(real) and 0.0 <= real < 2.0 ** 30):
        raise ValueError(f"quantize_multiplier: need 0 <= real < 2**30, got {real}")
    if real == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(real)         # real = mantissa * 2**exponent, m in [0.5, 1)
    multiplier = round(mantissa * 2.0 ** 31)
    if multiplier == 2 ** 31:                     # the mantissa rounded up to 1.0
        multiplier //= 2
        exponent += 1
    return int(multiplier), int(-exponent)


def requantize(acc, multiplier, shift, zero_point: int, dtype: str = "uint8",
               clamp_low: int | None = None) -> np.ndarray:
    """int32 accumulators -> ``dtype`` integers, in integer arithmetic only.

    ``q = clamp(((acc * multiplier) + 2**(s-1)) >> s + zero_point)`` with ``s = 31 + shift``:
    the product in int64 (|acc| < 2**31 and multiplier < 2**31, so it cannot overflow), a
    right shift that rounds half up, the zero point, then saturation to the type's range
    (raised to ``clamp_low`` when given: a fused ReLU clamps at the zero point).

    Parameters
    ----------
    acc : ndarray of int32
    multiplier, shift : int, or ndarrays broadcasting against ``acc`` (per channel)
    zero_point : int
    dtype : {"uint8", "int8"}
    """
    acc = np.asarray(acc, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    total = 31 + np.asarray(shift, dtype=np.int64)
    if np.any(total < 1) or np.any(total > 62):
        raise ValueError("requantize: 31 + shift must lie in [1, 62]")
    product = acc * multiplier
    scaled = (product + (np.int64(1) << (total - 1))) >> total
    low, high = RANGES[dtype]
    if clamp_low is not None:
        low = max(low, int(clamp_low))
    return np.clip(scaled + zero_point, low, high).astype(dtype)
