"""Batch norm's training forward and backward on the numba backend
(minicnn.kernels.batchnorm: one parallel loop over channels, float64 sums) against the layer's
NumPy definition (the reference backend): outputs, input and parameter gradients, running
statistics; float32 and float64, 1 and 2 threads, 1d with a length axis and 2d."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from minicnn import kernels, nn


def _run(kind, x, dy, backend, threads):
    bn = kind(x.shape[1], momentum=0.3, dtype=x.dtype)
    rng = np.random.default_rng(5)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, x.shape[1])
    bn.bias.data[...] = rng.normal(0, 1, x.shape[1])
    bn.train()
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with kernels.use_backend(backend):
            y = bn(x)
            dx = bn.backward(dy)
    finally:
        numba.set_num_threads(previous)
    return y, dx, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var, bn._cache[-1]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("kind, shape", [(nn.BatchNorm2d, (6, 5, 7, 9)),
                                         (nn.BatchNorm1d, (4, 3, 11)),
                                         (nn.BatchNorm2d, (2, 17, 1, 2))])
def test_kernel_equals_the_numpy_definition(kind, shape, dtype, tol, threads):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    fast = _run(kind, x, dy, "numba", threads)
    definition = _run(kind, x, dy, "reference", threads)
    assert fast[-1] is True and definition[-1] is False      # which path ran
    for got, want in zip(fast[:-1], definition[:-1]):
        scale = float(np.abs(want).max()) + 1e-12
        assert got.dtype == want.dtype
        assert float(np.abs(got - want).max()) <= tol * scale
