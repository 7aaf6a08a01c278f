"""``Linear`` (fully connected) and ``Flatten``."""

from __future__ import annotations

import numpy as np

from .. import init, kernels
from ..kernels import dense
from ._checks import as_dtype, check_array, check_input
from .module import Module, Parameter


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rng : numpy.random.Generator, int or None
    dtype : float32 (default) or float64
    backend : {"reference", "im2col", "numba"} or None
        ``"numba"`` splits the products across Numba's threads
        (:mod:`minicnn.kernels.dense`); the others use the NumPy lines below, which are the
        readable definition. ``None`` follows the process-wide default at each call.

    Shapes
    ------
    input ``(N, in_features)`` -> output ``(N, out_features)``; ``weight``
    ``(out_features, in_features)``, ``bias`` ``(out_features,)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None,
                 dtype=np.float32, backend: str | None = None):
        super().__init__()
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Linear: {arg} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        weight, bias_value = init.default_weight_and_bias(
            (out_features, in_features), out_features if bias else None,
            init.resolve_rng(rng), dtype)
        self.weight = Parameter(weight)
        self.bias = Parameter(bias_value) if bias else None
        if backend is not None:
            kernels.get(backend)  # fail now, not at the first forward, on a typo
        self.backend = backend
        self._x = None
        self._use_kernels = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input("Linear", x, 2, layout="(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(f"Linear: expected {self.in_features} input features, got "
                             f"{x.shape[1]} (input shape {x.shape}); is the Flatten size right?")
        self._x = x
        weight = as_dtype(self.weight.data, x.dtype)
        bias = None if self.bias is None else as_dtype(self.bias.data, x.dtype)
        self._use_kernels = ((self.backend or kernels.get_default_backend()) == "numba"
                             and dense.supports(x.dtype, weight))
        if self._use_kernels:
            return self._output(dense.linear_forward(x, weight, bias))
        y = x @ weight.T
        if bias is not None:
            y += bias
        return self._output(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dW += dyᵀ x``, ``db += Σ_n dy``, returns ``dx = dy W``."""
        dy = self._check_dy(dy, self._x)
        weight = as_dtype(self.weight.data, dy.dtype)
        if self._use_kernels:
            dx, dweight, dbias = dense.linear_backward(dy, self._x, weight)
        else:
            dx, dweight, dbias = dy @ weight, dy.T @ self._x, dy.sum(axis=0)
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)
        return dx

    def extra_repr(self) -> str:
        text = (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
        return text if self.backend is None else f"{text}, backend={self.backend!r}"


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` into one, as ``torch.nn.Flatten``
    (default: ``(N, C, H, W) -> (N, C*H*W)``). A view, no copy."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        self._input_shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array("Flatten", x)
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        self._input_shape = x.shape
        # The merged size is spelled out, not -1: reshape cannot infer it for an empty batch.
        merged = int(np.prod(x.shape[start:end + 1]))
        return self._output(x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1:]))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._input_shape)
        return dy.reshape(self._input_shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
