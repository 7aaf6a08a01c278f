"""Element-wise activations. Each remembers the least it needs for backward."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels import pointwise
from ._checks import check_array
from .module import Module


class ReLU(Module):
    """``max(x, 0)``; the gradient is 0 where ``x <= 0`` (also at 0) and passes elsewhere, a NaN
    included, as in PyTorch. Any shape.

    Parameters
    ----------
    inplace : bool
        Accepted for PyTorch parity; the output is always a new array.
    backend : {"reference", "im2col", "numba"} or None
        ``"numba"`` runs both passes in Numba's thread pool
        (:mod:`minicnn.kernels.pointwise`); the others use the NumPy code below, which is the
        readable definition. ``None`` follows the process-wide default at each call.
    """

    def __init__(self, inplace: bool = False, backend: str | None = None):
        super().__init__()
        if backend is not None:
            kernels.get(backend)  # fail now, not at the first forward, on a typo
        self.backend = backend
        self._mask = None       # NumPy path: where the gradient passes
        self._y = None          # kernel path: the output, whose sign says the same

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array("ReLU", x)
        if (self.backend or kernels.get_default_backend()) == "numba":
            self._mask, self._y = None, pointwise.relu_forward(x)
            return self._output(self._y)
        self._mask, self._y = ~(x <= 0), None   # ``~(x <= 0)``, not ``x > 0``: NaN passes
        # ``maximum`` and a multiply by the boolean mask, not ``np.where``: on these machines
        # ``np.where(mask, x, 0)`` measured ~10x slower (5.8 ms against 0.6 ms for
        # 64x32x28x28). ``maximum`` also keeps NaN as NaN, as PyTorch does.
        return self._output(np.maximum(x, x.dtype.type(0)))

    def _remember(self, y: np.ndarray) -> np.ndarray:
        """Keep ``y`` as if this layer's numba forward had produced it (a fused block did:
        :mod:`minicnn.nn.fusion`); returns ``y``."""
        self._mask, self._y = None, y
        return self._output(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._y is not None:
            dy = self._check_dy(dy, self._y)
            return pointwise.relu_backward(dy, self._y)
        dy = self._check_dy(dy, self._mask)
        return np.multiply(dy, self._mask, dtype=dy.dtype)

    def extra_repr(self) -> str:
        return "" if self.backend is None else f"backend={self.backend!r}"


class LeakyReLU(Module):
    """``x`` where ``x > 0``, else ``negative_slope * x``. Any shape."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._mask = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array("LeakyReLU", x)
        self._mask = x > 0
        return self._output(np.where(self._mask, x, x * x.dtype.type(self.negative_slope)))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._mask)
        return np.where(self._mask, dy, dy * dy.dtype.type(self.negative_slope))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``; backward uses the output: ``dy * y * (1 - y)``. Any shape."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array("Sigmoid", x)
        # Two branches so exp never overflows: for x < 0 use exp(x) / (1 + exp(x)).
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self._output(self._y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._y)
        return dy * self._y * (1 - self._y)


class Tanh(Module):
    """``tanh(x)``; backward ``dy * (1 - y²)``. Any shape."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array("Tanh", x)
        self._y = np.tanh(x)
        return self._output(self._y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._y)
        return dy * (1 - self._y * self._y)
