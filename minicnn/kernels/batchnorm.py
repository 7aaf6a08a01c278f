"""Batch norm with batch statistics (training), fast: one parallel loop over the channels.

:class:`minicnn.nn.BatchNorm2d` writes its training forward and backward in NumPy (the readable
definition): a mean, a variance, a normalisation and a scale as separate passes over the
batch, each a NumPy call on one thread, and as many again backward. In ResNet-20's training
step (19 batch norms, batch 64) that was about 40 % of the time. Here each channel is one
iteration of a parallel loop that makes the passes over that channel's values alone (they are
``N`` runs of ``H * W`` values), summing in float64:

- forward: the mean, then the (biased) variance around it, then ``x̂`` and ``y = x̂ γ + β``
  written together;
- backward: ``Σ dy`` and ``Σ dy x̂`` (the bias and weight gradients), then
  ``dx = (γ dy - γ Σdy / n - x̂ γ Σ(dy x̂) / n) / σ``, the layer's formula.

Sums in float64 round less than NumPy's float32 pairwise sums; the results agree with the
layer's NumPy to float32 tolerance, not bit for bit (tested against it and PyTorch).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# ``reassoc``: the float64 sums may be reordered, so LLVM vectorises them (in order, one
# value after another, each sum waited on its previous add: the forward 3x slower).
_JIT = dict(cache=True, nogil=True, parallel=True, fastmath={"reassoc"})


@njit(**_JIT)
def _forward(x, gamma, beta, eps, mean, var, inv_std, x_hat, y):
    """``x (N, C, L)``: per channel ``mean``, biased ``var``, ``inv_std = 1 / sqrt(var +
    eps)`` (in x's dtype, as the layer computes it), ``x_hat`` and ``y = x_hat * gamma +
    beta``."""
    n, channels, length = x.shape
    count = n * length
    for c in prange(channels):
        total = 0.0
        for s in range(n):
            row = x[s, c]
            for k in range(length):
                total += row[k]
        m = total / count
        squares = 0.0
        for s in range(n):
            row = x[s, c]
            for k in range(length):
                d = row[k] - m
                squares += d * d
        mean[c] = m
        var[c] = squares / count
        inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        # in x's dtype from here, as the layer computes them
        centre, scale, g, b = mean[c], inv_std[c], gamma[c], beta[c]
        for s in range(n):
            row, hat, out = x[s, c], x_hat[s, c], y[s, c]
            for k in range(length):
                value = (row[k] - centre) * scale
                hat[k] = value
                out[k] = value * g + b


@njit(**_JIT)
def _backward(dy, x_hat, gamma, inv_std, dx, dgamma, dbeta, means):
    """Per channel ``dbeta = Σ dy``, ``dgamma = Σ dy x̂`` and ``dx`` (see the module
    docstring); ``means (C, 2)`` scratch in dy's dtype (the two means, rounded to it)."""
    n, channels, length = dy.shape
    count = n * length
    for c in prange(channels):
        total = 0.0
        weighted = 0.0
        for s in range(n):
            grad, hat = dy[s, c], x_hat[s, c]
            for k in range(length):
                total += grad[k]
                weighted += grad[k] * hat[k]
        dbeta[c] = total
        dgamma[c] = weighted
        g, scale = gamma[c], inv_std[c]
        means[c, 0] = g * total / count           # stored: rounded to dy's dtype
        means[c, 1] = g * weighted / count
        mean_dx_hat, mean_dx_hat_x_hat = means[c, 0], means[c, 1]
        for s in range(n):
            grad, hat, out = dy[s, c], x_hat[s, c], dx[s, c]
            for k in range(length):
                out[k] = (grad[k] * g - mean_dx_hat - hat[k] * mean_dx_hat_x_hat) * scale


def forward(x, gamma, beta, eps):
    """Training batch norm of ``x (N, C, L)`` (C-contiguous float32 or float64) with batch
    statistics: ``(y, x_hat, mean, var, inv_std)``, ``var`` the biased variance."""
    n, channels, _ = x.shape
    dtype = x.dtype
    mean, var = np.empty(channels, dtype), np.empty(channels, dtype)
    inv_std = np.empty(channels, dtype)
    x_hat, y = np.empty_like(x), np.empty_like(x)
    _forward(x, np.ascontiguousarray(gamma, dtype), np.ascontiguousarray(beta, dtype),
             dtype.type(eps), mean, var, inv_std, x_hat, y)
    return y, x_hat, mean, var, inv_std


def backward(dy, x_hat, gamma, inv_std):
    """``(dx, dgamma, dbeta)`` for :func:`forward`'s ``x_hat`` and ``inv_std``."""
    channels = dy.shape[1]
    dx = np.empty_like(dy)
    dgamma, dbeta = np.empty(channels, dy.dtype), np.empty(channels, dy.dtype)
    _backward(np.ascontiguousarray(dy), x_hat, np.ascontiguousarray(gamma, dy.dtype), inv_std,
              dx, dgamma, dbeta, np.empty((channels, 2), dy.dtype))
    return dx, dgamma, dbeta
