"""Batch normalisation over channels: ``BatchNorm1d`` and ``BatchNorm2d``."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..kernels import batchnorm
from ._checks import as_dtype, check_input
from .module import Module, Parameter


class _BatchNorm(Module):
    """Normalise each channel with the batch's mean and variance (training) or the running
    estimates (eval), then scale by ``weight`` (gamma) and shift by ``bias`` (beta).

    Running statistics follow PyTorch: ``running = (1 - momentum) * running + momentum * batch``
    with the *unbiased* batch variance, while the normalisation itself uses the biased one.
    """

    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype=np.float32):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, "
                             f"got {num_features!r}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._cache = None

    def _axes_and_shape(self, x):
        """Axes to reduce over and the shape that broadcasts a per-channel vector."""
        axes = (0,) + tuple(range(2, x.ndim))
        return axes, (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = type(self).__name__
        x = check_input(name, x, self._ranks, self.num_features, self._layout)
        axes, shape = self._axes_and_shape(x)
        count = x.size // x.shape[1]
        use_batch_stats = self.training or not self.track_running_stats
        if x.shape[0] == 0:
            return self._empty_batch(x, use_batch_stats, axes, shape)
        if use_batch_stats:
            if count < 2 and self.training:
                raise ValueError(f"{name}: training needs more than one value per channel, got "
                                 f"input shape {x.shape}")
            fast = self._fast(x)
            if fast is not None:
                y, normalised, mean, var, inv_std, gamma = fast
            else:
                mean = x.mean(axis=axes, dtype=x.dtype)
                var = x.var(axis=axes, dtype=x.dtype)
            self._track(mean, var, count)
            if fast is not None:
                self._cache = (normalised, inv_std, gamma, use_batch_stats, axes, shape, True)
                return self._output(y)
        else:
            mean = as_dtype(self.running_mean, x.dtype)
            var = as_dtype(self.running_var, x.dtype)
        inv_std = (1.0 / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype, copy=False)
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        gamma = as_dtype(self.weight.data, x.dtype) if self.affine else np.ones_like(mean)
        y = x_hat * gamma.reshape(shape)
        if self.affine:
            y += as_dtype(self.bias.data, x.dtype).reshape(shape)
        self._cache = (x_hat, inv_std, gamma, use_batch_stats, axes, shape, False)
        return self._output(y)

    def _track(self, mean, var, count: int) -> None:
        """In training, fold the batch's ``mean`` and biased ``var`` (of ``count`` values per
        channel) into the running statistics."""
        if self.training and self.track_running_stats:
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
            self.running_var[...] = (1 - m) * self.running_var + m * var * (count / (count - 1))
            self.num_batches_tracked[...] += 1

    def _fast(self, x, residual=None, relu=False):
        """Batch statistics by :mod:`minicnn.kernels.batchnorm` (one parallel loop over the
        channels) where the numba backend is the default and ``x`` has values beyond the
        channel axis: ``(y, (x, mean), mean, var, inv_std, gamma)``, ``(x, mean)`` what backward
        recomputes ``x̂`` from (the input itself, (N, C, L), kept rather than an ``x̂`` of the
        same size written; PyTorch keeps its input too, and refuses a backward after the input
        was changed in place, where this one would silently use the changed values); else
        None (NumPy above, the definition). ``residual`` and ``relu``: see
        :meth:`_fused_forward`."""
        if (x.ndim < 3 or x.dtype not in (np.float32, np.float64)
                or kernels.get_default_backend() != "numba"):
            return None
        flat = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
        gamma = (as_dtype(self.weight.data, x.dtype) if self.affine
                 else np.ones(x.shape[1], dtype=x.dtype))
        beta = (as_dtype(self.bias.data, x.dtype) if self.affine
                else np.zeros(x.shape[1], dtype=x.dtype))
        y, mean, var, inv_std = batchnorm.forward(flat, gamma, beta, self.eps, residual, relu)
        return y.reshape(x.shape), (flat, mean), mean, var, inv_std, gamma

    def _fused_forward(self, x, residual, relu) -> np.ndarray | None:
        """``relu(self(x) + residual)`` (``residual`` None: ``relu(self(x))``) in one pass of
        the fast kernel, for a block that ends in this batch norm and the :class:`ReLU`
        ``relu`` (:class:`~minicnn.nn.BasicBlock`). Each layer keeps what its own forward
        would have kept (this one its statistics and input, ``relu`` its output), so each
        one's ``backward`` still works on its own; the values are the same bit for bit as
        the layers one after another. Returns None, having changed nothing, where the fast
        kernel would not run this batch norm on ``x`` (not training with batch statistics,
        another backend, an empty batch, a ``residual`` of another shape): the caller then
        runs the layers."""
        x = check_input(type(self).__name__, x, self._ranks, self.num_features, self._layout)
        count = x.size // x.shape[1] if x.shape[0] else 0
        if (not self.training or count < 2
                or (residual is not None and (residual.shape != x.shape
                                              or residual.dtype != x.dtype))):
            return None
        fast = self._fast(x, residual, True)
        if fast is None:
            return None
        y, normalised, mean, var, inv_std, gamma = fast
        self._track(mean, var, count)
        axes, shape = self._axes_and_shape(x)
        self._cache = (normalised, inv_std, gamma, True, axes, shape, True)
        self._output(y)         # (the shape and dtype of this layer's own output: the same)
        return relu._remember(y)

    def _backward_through_relu(self, dy: np.ndarray, relu) -> np.ndarray:
        """``self.backward(relu.backward(dy))`` in one pass, after :meth:`_fused_forward`
        without a residual (``dy`` is the gradient at ``relu``'s output)."""
        dy = relu._check_dy(dy, relu._y)
        self._require_forward(self._cache)
        normalised, inv_std, gamma, _, _, _, fast = self._cache
        if not fast:
            raise RuntimeError(f"{type(self).__name__}: backward through a ReLU needs the "
                               f"fused forward before it")
        x, mean = normalised
        dx, dgamma, dbeta = batchnorm.backward(dy.reshape(x.shape), x, mean, gamma, inv_std,
                                               relu_out=relu._y)
        if self.affine:
            self.weight.accumulate_grad(dgamma)
            self.bias.accumulate_grad(dbeta)
        return dx.reshape(dy.shape)

    def _empty_batch(self, x, use_batch_stats, axes, shape) -> np.ndarray:
        """A batch of 0 samples, as PyTorch: an empty output, running statistics unchanged
        (there is nothing to average), ``num_batches_tracked`` still counts the call."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked[...] += 1
        ones = np.ones(self.num_features, dtype=x.dtype)
        gamma = as_dtype(self.weight.data, x.dtype) if self.affine else ones
        self._cache = (x.copy(), ones, gamma, use_batch_stats, axes, shape, False)
        return self._output(x.copy())

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """With batch statistics, mean and variance depend on every input, which gives
        ``dx = inv_std / n * (n * dx̂ - Σ dx̂ - x̂ Σ(dx̂ x̂))`` with ``dx̂ = dy * gamma``;
        with running statistics they are constants and ``dx = dy * gamma * inv_std``."""
        dy = self._check_dy(dy, self._cache)
        saved, inv_std, gamma, use_batch_stats, axes, shape, fast = self._cache
        if fast:            # forward ran minicnn.kernels.batchnorm: its backward, the same formula
            x, mean = saved     # (x̂ recomputed from them)
            dx, dgamma, dbeta = batchnorm.backward(dy.reshape(x.shape), x, mean, gamma,
                                                   inv_std)
            if self.affine:
                self.weight.accumulate_grad(dgamma)
                self.bias.accumulate_grad(dbeta)
            return dx.reshape(dy.shape)
        x_hat = saved
        if self.affine:
            self.weight.accumulate_grad((dy * x_hat).sum(axis=axes))
            self.bias.accumulate_grad(dy.sum(axis=axes))
        dx_hat = dy * gamma.reshape(shape)
        if not use_batch_stats or dy.size == 0:
            return dx_hat * inv_std.reshape(shape)
        mean_dx_hat = dx_hat.mean(axis=axes, keepdims=True)
        mean_dx_hat_x_hat = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
        return (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat) * inv_std.reshape(shape)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm for ``(N, C)`` or ``(N, C, L)`` inputs, statistics per channel ``C``."""

    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm for ``(N, C, H, W)`` images, statistics per channel over N, H and W."""

    _ranks = (4,)
    _layout = "(N, C, H, W)"
