"""Shape arithmetic shared by every kernel: output sizes and padding.

Conventions used by all kernels
-------------------------------
- ``x`` is NCHW: ``(N, C, H, W)``.
- ``stride`` and ``dilation`` are pairs ``(along H, along W)``.
- ``padding`` is a 4-tuple ``(top, bottom, left, right)`` so that ``"same"`` padding with an
  even kernel (which PyTorch pads one more on the bottom/right) is expressible.
"""

from __future__ import annotations

import numpy as np


def output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                dilation: int = 1) -> int:
    """Number of window positions along one axis.

    ``floor((size + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1``,
    the formula PyTorch documents for ``Conv2d`` and ``MaxPool2d``.
    """
    span = dilation * (kernel - 1) + 1
    return (size + pad_before + pad_after - span) // stride + 1


def pad_nchw(x: np.ndarray, padding: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of an NCHW array; returns ``x`` itself when there is no padding.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    padding : (top, bottom, left, right)
    value : fill value (``-inf`` for max pooling)

    Returns
    -------
    ndarray, shape (N, C, H + top + bottom, W + left + right)
    """
    top, bottom, left, right = padding
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    padded = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    padded[:, :, top:top + h, left:left + w] = x
    return padded


def window_view(x_padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """A read-only strided view of every window: no copy.

    Parameters
    ----------
    x_padded : ndarray, shape (N, C, Hp, Wp)

    Returns
    -------
    ndarray, shape (N, C, kH, kW, H_out, W_out)
        ``view[n, c, i, j, oh, ow] == x_padded[n, c, oh*sH + i*dH, ow*sW + j*dW]``.
    """
    n, c, _, _ = x_padded.shape
    s_n, s_c, s_h, s_w = x_padded.strides
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    return np.lib.stride_tricks.as_strided(
        x_padded, shape=(n, c, kh, kw, oh, ow),
        strides=(s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)
