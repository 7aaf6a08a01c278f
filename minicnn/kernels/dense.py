"""One-pool fully connected layer: ``y = x @ Wᵀ + b`` split across Numba's threads.

NumPy's ``x @ W.T`` runs on OpenBLAS's own thread pool, whose workers keep spinning after the
product and starve the Numba loops of the next layer (see :mod:`minicnn.kernels.onepool`). Here
each Numba thread calls the single-threaded in-kernel GEMM (:mod:`minicnn.kernels.blas`) on its
own share, so the whole layer stays in one pool:

- forward and ``dx = dy @ W``: each thread takes a block of *rows* (samples);
- ``dW = dyᵀ @ x`` and ``db = Σ dy``: each thread takes a block of *output features*, so no
  two threads write the same gradient entry and nothing has to be added up afterwards.

Products too small to share (``N * in * out`` below :data:`PARALLEL_MIN_WORK`, the size under
which OpenBLAS itself stays on one thread) run on the calling thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import blas
from .blas import gemm as _gemm
from . import threads as _threads

_JIT = dict(cache=True, nogil=True)

#: Multiply-adds below which one thread does the whole product (OpenBLAS's own threshold for
#: going multi-threaded is 65536 * 4).
PARALLEL_MIN_WORK = 262_144


@njit(**_JIT)
def _forward_rows(x, weight, bias, has_bias, y, first, last):
    """``y[first:last] = x[first:last] @ Wᵀ + b`` (one thread's rows)."""
    n_in, n_out = x.shape[1], weight.shape[0]
    if last > first:
        _gemm(blas.NO_TRANS, blas.TRANS, last - first, n_out, n_in, x[first:], n_in, weight,
              n_in, 0.0, y[first:], n_out)
        if has_bias:   # loops, not ``y[n] += bias``: see onepool's note on slice assignment
            for n in range(first, last):
                row = y[n]
                for o in range(n_out):
                    row[o] += bias[o]


@njit(**_JIT)
def _weight_grad_features(x, dy, dweight, dbias, first, last):
    """``dweight[f] = dy[:, f]ᵀ @ x`` and ``dbias[f] = Σ_n dy[n, f]`` for the output features
    ``f`` in ``[first, last)`` (one thread's features: nobody else writes them)."""
    n_batch, n_in = x.shape
    n_out = dy.shape[1]
    if last > first and n_batch > 0:
        _gemm(blas.TRANS, blas.NO_TRANS, last - first, n_in, n_batch, dy[:, first:], n_out, x,
              n_in, 0.0, dweight[first:], n_in)
    elif last > first:
        dweight[first:last] = 0
    for o in range(first, last):
        total = dy.dtype.type(0)
        for n in range(n_batch):
            total += dy[n, o]
        dbias[o] = total


@njit(**_JIT)
def _input_grad_rows(dy, weight, dx, first, last):
    """``dx[first:last] = dy[first:last] @ W`` (one thread's rows)."""
    n_out, n_in = weight.shape
    if last > first:
        _gemm(blas.NO_TRANS, blas.NO_TRANS, last - first, n_in, n_out, dy[first:], n_out,
              weight, n_in, 0.0, dx[first:], n_in)


@njit(parallel=True, **_JIT)
def _parallel_forward(x, weight, bias, has_bias, y, n_threads):
    n_batch = x.shape[0]
    for t in prange(n_threads):
        _forward_rows(x, weight, bias, has_bias, y, t * n_batch // n_threads,
                      (t + 1) * n_batch // n_threads)


@njit(parallel=True, **_JIT)
def _parallel_backward(x, dy, weight, dx, dweight, dbias, need_input_grad, n_threads):
    n_batch, n_out = x.shape[0], weight.shape[0]
    for t in prange(n_threads):
        _weight_grad_features(x, dy, dweight, dbias, t * n_out // n_threads,
                              (t + 1) * n_out // n_threads)
        if need_input_grad:
            _input_grad_rows(dy, weight, dx, t * n_batch // n_threads,
                             (t + 1) * n_batch // n_threads)


def supports(x_dtype, weight) -> bool:
    """Whether these kernels handle the layer (float32/float64 with an in-kernel GEMM)."""
    return blas.dtype_supported(x_dtype) and weight.dtype == x_dtype


def _n_threads(n_batch: int, n_in: int, n_out: int) -> int:
    """Threads worth using: one for small products, else one per Numba thread (a thread whose
    share of rows or features is empty just skips that part)."""
    work = n_batch * n_in * n_out
    return 1 if work < PARALLEL_MIN_WORK else _threads.threads_for(work)


def linear_forward(x, weight, bias):
    """``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : ndarray, shape (N, in_features)
    weight : ndarray, shape (out_features, in_features), same dtype as ``x``
    bias : ndarray, shape (out_features,), or None

    Returns
    -------
    ndarray, shape (N, out_features)
    """
    x = np.ascontiguousarray(x)
    weight = np.ascontiguousarray(weight)
    n_batch, n_in = x.shape
    n_out = weight.shape[0]
    y = np.empty((n_batch, n_out), dtype=x.dtype)
    has_bias = bias is not None
    bias_arg = np.ascontiguousarray(bias) if has_bias else np.zeros(1, dtype=x.dtype)
    n_threads = _n_threads(n_batch, n_in, n_out)
    with _threads.blas_single_threaded():
        if n_threads == 1:
            _forward_rows(x, weight, bias_arg, has_bias, y, 0, n_batch)
        else:
            _parallel_forward(x, weight, bias_arg, has_bias, y, n_threads)
    return y


def linear_backward(dy, x, weight, need_input_grad=True):
    """Gradients of :func:`linear_forward`: ``(dx or None, dweight, dbias)`` with
    ``dx = dy @ W`` (N, in), ``dweight = dyᵀ @ x`` (out, in) and ``dbias = Σ_n dy`` (out,)."""
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    weight = np.ascontiguousarray(weight)
    n_batch, n_in = x.shape
    n_out = weight.shape[0]
    dx = np.empty((n_batch if need_input_grad else 0, n_in), dtype=x.dtype)
    dweight = np.empty((n_out, n_in), dtype=x.dtype)
    dbias = np.empty(n_out, dtype=x.dtype)
    n_threads = _n_threads(n_batch, n_in, n_out)
    with _threads.blas_single_threaded():
        if n_threads == 1:
            _weight_grad_features(x, dy, dweight, dbias, 0, n_out)
            if need_input_grad:
                _input_grad_rows(dy, weight, dx, 0, n_batch)
        else:
            _parallel_backward(x, dy, weight, dx, dweight, dbias, bool(need_input_grad),
                               n_threads)
    return (dx if need_input_grad else None), dweight, dbias
