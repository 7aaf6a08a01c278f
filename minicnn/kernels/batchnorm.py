"""Batch norm with batch statistics (training), fast: one parallel loop over the channels.

:class:`minicnn.nn.BatchNorm2d` writes its training forward and backward in NumPy (the readable
definition): a mean, a variance, a normalisation and a scale as separate passes over the
batch, each a NumPy call on one thread, and as many again backward. In ResNet-20's training
step (19 batch norms, batch 64) that was about 40 % of the time. Here each channel is one
iteration of a parallel loop that makes the passes over that channel's values alone (they are
``N`` runs of ``H * W`` values), summing in float64:

- forward: the mean and the (biased) variance in one pass, then ``y = x̂ γ + β`` with
  ``x̂ = (x - mean) / σ`` computed on the way and not stored. The one pass sums ``x - s``
  and its square, ``s`` the channel's first value (the *shifted* sums: ``var = Σ(x - s)² / n
  - (Σ(x - s) / n)²`` loses nothing worth a float32 result where ``s`` is within a few
  standard deviations of the mean, which a value of the batch is; it is the unshifted
  ``E[x²] - E[x]²`` that cancels, around a large mean). A second pass around the mean cost
  ResNet-20's 16-channel forward (batch 64, one Zen 3 core) 0.1 ms of 0.58;
- backward: ``Σ dy`` and ``Σ dy x̂`` (the bias and weight gradients), then
  ``dx = (γ dy - γ Σdy / n - x̂ γ Σ(dy x̂) / n) / σ``, the layer's formula, with ``x̂``
  recomputed from ``x`` exactly as forward computed it (:func:`_normalised`: the same two
  roundings), so the values are those of a stored ``x̂`` bit for bit. Not storing it saves
  a write of the activation's size on every training forward (ResNet-20's 16-channel batch
  norm at batch 64: 4 MB, a third of the forward's memory traffic), and the layer keeps
  ``x`` instead, the same memory.

Sums in float64 round less than NumPy's float32 pairwise sums; the results agree with the
layer's NumPy to float32 tolerance, not bit for bit (tested against it and PyTorch).

A residual block's end runs in the same pass (:class:`minicnn.nn.BasicBlock`): the forward
adds a residual and applies a ReLU as it writes ``y`` (the same values bit for bit as the add
and the ReLU after it), and the backward takes the gradient through that ReLU as it reads it
(one pass fewer over the batch for each).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# ``reassoc``: the float64 sums may be reordered, so LLVM vectorises them (in order, one
# value after another, each sum waited on its previous add: the forward 3x slower).
_JIT = dict(cache=True, nogil=True, parallel=True, fastmath={"reassoc"})


@njit(**_JIT)
def _forward(x, gamma, beta, eps, mean, var, inv_std, y, residual, relu):
    """``x (N, C, L)``: per channel ``mean``, biased ``var``, ``inv_std = 1 / sqrt(var +
    eps)`` (in x's dtype, as the layer computes it) and ``y = x_hat * gamma + beta`` (then
    ``+ residual`` where that is not empty, then a ReLU where ``relu``: :func:`_finish_row`)."""
    n, channels, length = x.shape
    count = n * length
    for c in prange(channels):
        shift = np.float64(x[0, c, 0])      # the shifted sums (module docstring)
        total = 0.0
        squares = 0.0
        for s in range(n):
            row = x[s, c]
            for k in range(length):
                d = row[k] - shift
                total += d
                squares += d * d
        offset = total / count
        mean[c] = shift + offset
        var[c] = max(squares / count - offset * offset, 0.0)
        inv_std[c] = 1.0 / np.sqrt(var[c] + eps)
        # in x's dtype from here, as the layer computes them
        for s in range(n):
            res = residual[s, c] if residual.shape[0] > 0 else x[s, c, :0]   # (empty: none)
            _finish_row(x[s, c], y[s, c], res, mean[c], inv_std[c], gamma[c], beta[c], relu)


@njit(cache=True, nogil=True)
def _normalised(value, centre, scale):
    """``x̂ = (value - centre) * scale``, two roundings in the value's dtype. Never fast-math
    (compiled apart, its instructions keep their own flags where a fast-math caller inlines
    it): forward and backward must round ``x̂`` identically."""
    return (value - centre) * scale


@njit(cache=True, nogil=True)
def _finish_row(row, out, res, centre, scale, g, b, relu):
    """``out = x̂ * g + b`` (``+ res`` where ``res`` is not empty), then ``max(out, 0)`` where
    ``relu`` (NaN kept, as :class:`minicnn.nn.ReLU`), ``x̂`` by :func:`_normalised`. No
    fast-math here: each value rounds exactly as the layers one after another would (batch
    norm, the add, the ReLU), so a fused block equals the unfused one bit for bit."""
    zero = row.dtype.type(0)
    if res.shape[0] > 0:
        if relu:
            for k in range(row.shape[0]):
                v = _normalised(row[k], centre, scale) * g + b + res[k]
                out[k] = v if not v < zero else zero
        else:
            for k in range(row.shape[0]):
                out[k] = _normalised(row[k], centre, scale) * g + b + res[k]
    elif relu:
        for k in range(row.shape[0]):
            v = _normalised(row[k], centre, scale) * g + b
            out[k] = v if not v < zero else zero
    else:
        for k in range(row.shape[0]):
            out[k] = _normalised(row[k], centre, scale) * g + b


@njit(**_JIT)
def _backward(dy, x, mean, gamma, inv_std, dx, dgamma, dbeta, means, relu_out):
    """Per channel ``dbeta = Σ dy``, ``dgamma = Σ dy x̂`` and ``dx`` (see the module
    docstring), ``x̂`` recomputed from ``x``, ``mean`` and ``inv_std`` (:func:`_normalised`);
    ``means (C, 2)`` scratch in dy's dtype (the two means, rounded to it). Where ``relu_out``
    is not empty, ``dy`` is first taken through the ReLU that produced it (zero where
    ``relu_out <= 0``, as :class:`minicnn.nn.ReLU`'s backward)."""
    n, channels, length = dy.shape
    count = n * length
    masked = relu_out.shape[0] > 0
    zero = dy.dtype.type(0)
    for c in prange(channels):
        centre, scale = mean[c], inv_std[c]
        total = 0.0
        weighted = 0.0
        for s in range(n):
            grad, row = dy[s, c], x[s, c]
            if masked:
                after = relu_out[s, c]
                for k in range(length):
                    through = zero if after[k] <= zero else grad[k]
                    total += through
                    weighted += through * _normalised(row[k], centre, scale)
            else:
                for k in range(length):
                    total += grad[k]
                    weighted += grad[k] * _normalised(row[k], centre, scale)
        dbeta[c] = total
        dgamma[c] = weighted
        g = gamma[c]
        means[c, 0] = g * total / count           # stored: rounded to dy's dtype
        means[c, 1] = g * weighted / count
        mean_dx_hat, mean_dx_hat_x_hat = means[c, 0], means[c, 1]
        for s in range(n):
            grad, row, out = dy[s, c], x[s, c], dx[s, c]
            if masked:
                after = relu_out[s, c]
                for k in range(length):
                    through = zero if after[k] <= zero else grad[k]
                    hat = _normalised(row[k], centre, scale)
                    out[k] = (through * g - mean_dx_hat - hat * mean_dx_hat_x_hat) * scale
            else:
                for k in range(length):
                    hat = _normalised(row[k], centre, scale)
                    out[k] = (grad[k] * g - mean_dx_hat - hat * mean_dx_hat_x_hat) * scale


def forward(x, gamma, beta, eps, residual=None, relu=False):
    """Training batch norm of ``x (N, C, L)`` (C-contiguous float32 or float64) with batch
    statistics: ``(y, mean, var, inv_std)``, ``var`` the biased variance. With ``residual``
    (same shape and dtype) ``y`` is ``bn(x) + residual``; with ``relu`` it then goes through
    a ReLU: a residual block's end in the same pass. :func:`backward` needs ``x``, ``mean``
    and ``inv_std`` again."""
    n, channels, _ = x.shape
    dtype = x.dtype
    mean, var = np.empty(channels, dtype), np.empty(channels, dtype)
    inv_std = np.empty(channels, dtype)
    y = np.empty_like(x)
    residual = (np.empty((0, 0, 0), dtype) if residual is None
                else np.ascontiguousarray(residual, dtype).reshape(x.shape))
    _forward(x, np.ascontiguousarray(gamma, dtype), np.ascontiguousarray(beta, dtype),
             dtype.type(eps), mean, var, inv_std, y, residual, bool(relu))
    return y, mean, var, inv_std


def backward(dy, x, mean, gamma, inv_std, relu_out=None):
    """``(dx, dgamma, dbeta)`` for :func:`forward` of ``x`` (its ``mean`` and ``inv_std``);
    with ``relu_out`` (the output of a ReLU right after the batch norm), ``dy`` is the
    gradient at that ReLU's output and goes back through it first."""
    channels = dy.shape[1]
    dx = np.empty_like(dy)
    dgamma, dbeta = np.empty(channels, dy.dtype), np.empty(channels, dy.dtype)
    relu_out = (np.empty((0, 0, 0), dy.dtype) if relu_out is None
                else np.ascontiguousarray(relu_out, dy.dtype).reshape(x.shape))
    _backward(np.ascontiguousarray(dy), x, mean, np.ascontiguousarray(gamma, dy.dtype),
              inv_std, dx, dgamma, dbeta, np.empty((channels, 2), dy.dtype), relu_out)
    return dx, dgamma, dbeta
