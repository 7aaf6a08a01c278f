"""Argument parsing and input checks shared by the layers, so every error reads the same way:
the layer, what it expected, what it got.

dtype policy (the same for every layer and every kernel backend)
----------------------------------------------------------------
- Inputs are computed in **float32 or float64**, the two dtypes every backend compiles for.
  Any other dtype (float16, longdouble, integers, bool, complex) is refused with a
  ``TypeError`` that says how to convert; the engine never silently changes the precision.
- A float32/float64 array in **non-native byte order** (e.g. big-endian ``>f4`` read from a
  file) is converted to native order, same precision: the arithmetic is identical and Numba
  can only compile for native arrays. Outputs are native-order arrays of that precision.
- Any memory layout is accepted (non-contiguous views, Fortran order): backends copy to C
  order where their loops need it.
- ``dy`` given to ``backward`` must have exactly the shape of the forward output and a real
  floating dtype; a different floating dtype (or byte order) is **converted** to the dtype of
  the forward output, as PyTorch's autograd converts gradients to the output's dtype.
"""

from __future__ import annotations

import numpy as np

#: The dtypes the kernels compute in.
COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def pair(value, layer: str, name: str, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a pair into a pair of ints, checking each is at least ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        result = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        result = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if min(result) < minimum:
        raise ValueError(f"{layer}: {name} must be at least {minimum}, got {value!r}")
    return result


def check_array(layer: str, x, layout: str = "") -> np.ndarray:
    """``x`` as a native-byte-order float32/float64 ndarray, or a ``TypeError``.

    Parameters
    ----------
    layer : str
        Name used in the message.
    x : object
        What the caller passed.
    layout : str
        The expected layout, e.g. ``"(N, C, H, W)"``, for the message.

    Returns
    -------
    ndarray
        ``x`` itself, or a native-byte-order copy when ``x`` is big-endian (see the module
        docstring for the policy).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{layer}: expected a NumPy array {layout}".rstrip() +
                        f", got {type(x).__name__}")
    native = x.dtype.newbyteorder("=")
    if native not in COMPUTE_DTYPES:
        if np.issubdtype(x.dtype, np.floating):
            hint = "convert with x.astype(np.float32)"
        else:
            hint = "convert images with x.astype(np.float32) / 255"
        raise TypeError(f"{layer}: expected a floating-point array (float32 or float64), got "
                        f"dtype {x.dtype}; {hint}")
    return x if x.dtype == native else x.astype(native)


def check_input(layer: str, x, ndim: int | tuple[int, ...], channels: int | None = None,
                layout: str = "(N, C, H, W)") -> np.ndarray:
    """Check that ``x`` is a float32/float64 ndarray with the expected rank and channel count.

    Returns ``x`` in native byte order (see :func:`check_array`).
    """
    x = check_array(layer, x, layout)
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in ranks:
        raise ValueError(f"{layer}: expected a {' or '.join(map(str, ranks))}-D input {layout}, "
                         f"got {x.ndim}-D with shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{layer}: expected {channels} input channels (dim 1 of {layout}), "
                         f"got {x.shape[1]} (input shape {x.shape})")
    return x


def check_grad(layer: str, dy, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Validate the upstream gradient ``dy`` against the forward output it belongs to.

    Parameters
    ----------
    layer : str
        Name used in the message.
    dy : object
        What the caller passed to ``backward``.
    shape, dtype
        Shape and dtype of the forward output.

    Returns
    -------
    ndarray
        ``dy``, converted to ``dtype`` when it is another floating dtype.

    Raises
    ------
    TypeError
        ``dy`` is not an ndarray or not real floating point.
    ValueError
        ``dy`` does not have the forward output's shape.
    """
    if not isinstance(dy, np.ndarray):
        raise TypeError(f"{layer}.backward: expected dy as a NumPy array of shape {shape} "
                        f"(the forward output), got {type(dy).__name__}")
    if not np.issubdtype(dy.dtype, np.floating):
        raise TypeError(f"{layer}.backward: expected a floating-point dy (like the forward "
                        f"output, {np.dtype(dtype)}), got dtype {dy.dtype}")
    if dy.shape != tuple(shape):
        raise ValueError(f"{layer}.backward: expected dy of shape {tuple(shape)} (the forward "
                         f"output), got {dy.shape}")
    return as_dtype(dy, dtype)


def as_dtype(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` in ``dtype`` without a copy when it already is."""
    return array if array.dtype == dtype else array.astype(dtype)
