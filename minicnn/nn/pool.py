"""Pooling layers: ``MaxPool2d``, ``AvgPool2d`` (kernel backends) and ``AdaptiveAvgPool2d``."""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ._checks import check_input, pair
from .module import BackendContext, Module


class _Pool2d(Module):
    _kind = ""

    def __init__(self, kernel_size, stride=None, padding=0, backend: str | None = None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, name, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, name, "stride")
        ph, pw = pair(padding, name, "padding", minimum=0)
        if ph > self.kernel_size[0] // 2 or pw > self.kernel_size[1] // 2:
            raise ValueError(f"{name}: padding {(ph, pw)} must be at most half the kernel "
                             f"size {self.kernel_size}")
        self.padding = (ph, pw)
        self._pads = (ph, ph, pw, pw)
        if backend is not None:
            kernels.get(backend)
        self.backend = backend
        self._ctx = None

    def _check(self, x) -> np.ndarray:
        name = type(self).__name__
        x = check_input(name, x, 4)
        for axis, size in ((0, x.shape[2]), (1, x.shape[3])):
            if size + 2 * self.padding[axis] < self.kernel_size[axis]:
                raise ValueError(f"{name}: kernel {self.kernel_size} is larger than the padded "
                                 f"input {tuple(s + 2 * p for s, p in zip(x.shape[2:], self.padding))}")
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._ctx)
        backend = kernels.get(self._ctx.backend)
        return getattr(backend, f"{self._kind}pool2d_backward")(dy, self._ctx.ctx)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over ``kernel_size`` windows, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or pair
    stride : int, pair or None (default: ``kernel_size``)
    padding : int or pair, at most half the kernel; padded cells count as ``-inf``

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, H_out, W_out)``, ``H_out = floor((H + 2p - k) / s) + 1``.
    Backward sends each output's gradient to the one input that was the maximum.
    """

    _kind = "max"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        backend_name = self.backend or kernels.get_default_backend()
        backend = kernels.get(backend_name)
        y, ctx = backend.maxpool2d_forward(x, self.kernel_size, self.stride, self._pads)
        return self._remember(backend_name, ctx, y)

    def _remember(self, backend_name: str, ctx, y: np.ndarray) -> np.ndarray:
        """Keep the backend's ``ctx`` for backward and ``y``'s shape; returns ``y`` (also
        called by a fused block that pooled for this layer: :mod:`minicnn.nn.fusion`)."""
        self._ctx = BackendContext(backend_name, ctx)
        return self._output(y)


class AvgPool2d(_Pool2d):
    """Mean over ``kernel_size`` windows, as ``torch.nn.AvgPool2d``.

    ``count_include_pad`` (default True, like PyTorch) divides by the full window size even
    where the window overlaps padding. Shapes as :class:`MaxPool2d`.
    """

    _kind = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True,
                 backend: str | None = None):
        super().__init__(kernel_size, stride, padding, backend)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        backend_name = self.backend or kernels.get_default_backend()
        backend = kernels.get(backend_name)
        y, ctx = backend.avgpool2d_forward(x, self.kernel_size, self.stride, self._pads,
                                           self.count_include_pad)
        self._ctx = BackendContext(backend_name, ctx)
        return self._output(y)


class AdaptiveAvgPool2d(Module):
    """Average-pool to a fixed output size whatever the input size, as PyTorch's.

    Output cell ``(i, j)`` averages input rows ``floor(i*H/out_h)`` to ``ceil((i+1)*H/out_h)``
    (exclusive) and likewise for columns; ``output_size=1`` is global average pooling.

    Shapes
    ------
    ``(N, C, H, W) -> (N, C, out_h, out_w)``.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = pair(output_size, "AdaptiveAvgPool2d", "output_size")
        self._input_shape = None

    @staticmethod
    def _bounds(size: int, out: int) -> list[tuple[int, int]]:
        return [(i * size // out, math.ceil((i + 1) * size / out)) for i in range(out)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input("AdaptiveAvgPool2d", x, 4)
        n, c, h, w = x.shape
        if h == 0 or w == 0:  # no values to average (PyTorch refuses this too)
            raise ValueError(f"AdaptiveAvgPool2d: expected a non-zero height and width, got "
                             f"input shape {x.shape}")
        out_h, out_w = self.output_size
        self._input_shape = x.shape
        if (out_h, out_w) == (1, 1):
            return self._output(x.mean(axis=(2, 3), keepdims=True, dtype=x.dtype))
        y = np.empty((n, c, out_h, out_w), dtype=x.dtype)
        for i, (r0, r1) in enumerate(self._bounds(h, out_h)):
            for j, (c0, c1) in enumerate(self._bounds(w, out_w)):
                y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3), dtype=x.dtype)
        return self._output(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._input_shape)
        n, c, h, w = self._input_shape
        out_h, out_w = self.output_size
        if (out_h, out_w) == (1, 1):
            return np.broadcast_to(dy / dy.dtype.type(h * w), (n, c, h, w)).copy()
        dx = np.zeros(self._input_shape, dtype=dy.dtype)
        for i, (r0, r1) in enumerate(self._bounds(h, out_h)):
            for j, (c0, c1) in enumerate(self._bounds(w, out_w)):
                area = dy.dtype.type((r1 - r0) * (c1 - c0))
                dx[:, :, r0:r1, c0:c1] += (dy[:, :, i, j] / area)[:, :, None, None]
        return dx

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
