"""Weight initialisers computed from fan-in and fan-out (He / Kaiming and Glorot / Xavier).

Every function takes an explicit ``numpy.random.Generator``; :func:`default_rng` supplies
minicnn's own generator when a layer is built without one, and :func:`manual_seed` reseeds it
(like ``torch.manual_seed``), so ``manual_seed(0)`` followed by building a model always gives
the same weights. NumPy's global random state is never used.

As with ``torch.manual_seed``, reseeding affects every *later* draw: weights already drawn stay,
and a layer that draws at run time (``Dropout`` built without ``rng``) takes its next masks from
the reseeded stream even if it was built before ``manual_seed`` ran. The generator is reseeded
in place, so whoever holds :func:`default_rng`'s object follows the new seed too.
"""

from __future__ import annotations

import math

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the generator layers use when they are not given one; returns it.

    The same ``Generator`` object is reseeded in place (not replaced), so references taken
    before the call see the new stream.
    """
    _generator.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    return _generator


def default_rng() -> np.random.Generator:
    """The generator layers draw from when they are built without ``rng``."""
    return _generator


def resolve_rng(rng) -> np.random.Generator:
    """Accept a Generator, an int seed or ``None`` (minicnn's default generator)."""
    if rng is None:
        return _generator
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a weight, as PyTorch computes them.

    For a Linear weight ``(out, in)``: ``(in, out)``. For a conv weight
    ``(C_out, C_in_g, kH, kW)``: ``(C_in_g * kH * kW, C_out * kH * kW)``.
    """
    if len(shape) < 2:
        raise ValueError(f"fan in/out needs a weight with at least 2 dimensions, got {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain PyTorch uses for each nonlinearity (``relu``: sqrt(2), ``tanh``: 5/3, ...)."""
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected linear, conv2d, sigmoid, "
                     "tanh, relu or leaky_relu")


def kaiming_uniform(shape, rng, a: float = 0.0, nonlinearity: str = "leaky_relu",
                    mode: str = "fan_in", dtype=np.float32) -> np.ndarray:
    """He uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``.

    With ``a = sqrt(5)`` this is PyTorch's default for Conv2d and Linear weights, which works
    out to ``b = 1 / sqrt(fan_in)``.
    """
    fan = fan_in_and_fan_out(shape)[0 if mode == "fan_in" else 1]
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_normal(shape, rng, a: float = 0.0, nonlinearity: str = "relu",
                   mode: str = "fan_in", dtype=np.float32) -> np.ndarray:
    """He normal: ``N(0, std²)`` with ``std = gain / sqrt(fan)``; the classic choice for ReLU."""
    fan = fan_in_and_fan_out(shape)[0 if mode == "fan_in" else 1]
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return (rng.standard_normal(size=shape) * std).astype(dtype)


def xavier_uniform(shape, rng, gain: float = 1.0, dtype=np.float32) -> np.ndarray:
    """Glorot uniform: ``U(-b, b)`` with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def xavier_normal(shape, rng, gain: float = 1.0, dtype=np.float32) -> np.ndarray:
    """Glorot normal: ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (rng.standard_normal(size=shape) * std).astype(dtype)


def default_weight_and_bias(weight_shape, bias_size, rng, dtype):
    """PyTorch's default for Conv2d and Linear: He uniform with ``a = sqrt(5)`` for the weight
    and ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the bias."""
    weight = kaiming_uniform(weight_shape, rng, a=math.sqrt(5.0), dtype=dtype)
    if bias_size is None:
        return weight, None
    bound = 1.0 / math.sqrt(fan_in_and_fan_out(weight_shape)[0])
    return weight, rng.uniform(-bound, bound, size=bias_size).astype(dtype)
