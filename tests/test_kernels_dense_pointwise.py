"""The Numba-pool kernels behind ``Linear`` and ``ReLU`` on the numba backend
(:mod:`minicnn.kernels.dense`, :mod:`minicnn.kernels.pointwise`): PyTorch parity on both sides of
their one-thread thresholds and at 1 and 2 threads, empty batches, NaN, and the layers' choice
of path."""

import numba
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.kernels import blas, dense, pointwise
from torch_oracle import GRADCHECK_TOL, assert_close, to_numpy, to_torch

torch = pytest.importorskip("torch")


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request):
    previous = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    numba.set_num_threads(previous)


# (batch, in, out): the MNIST CNN's and LeNet's layers (parallel), tiny ones (one thread),
# a batch smaller than the thread count, fewer outputs than threads, an empty batch.
LINEAR_SHAPES = [(64, 3136, 128), (64, 400, 120), (64, 128, 10), (1, 600, 700), (65, 4100, 1),
                 (0, 300, 900), (3, 5, 7)]


@pytest.mark.skipif(not blas.AVAILABLE, reason="no in-kernel GEMM in this NumPy build")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_kernels_match_torch(shape, dtype, n_threads, rng):
    n, n_in, n_out = shape
    x = rng.standard_normal((n, n_in)).astype(dtype)
    weight = rng.standard_normal((n_out, n_in)).astype(dtype)
    bias = rng.standard_normal(n_out).astype(dtype)
    y = dense.linear_forward(x, weight, bias)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dweight, dbias = dense.linear_backward(dy, x, weight)
    no_dx, dweight_again, _ = dense.linear_backward(dy, x, weight, need_input_grad=False)

    tx, tw, tb = to_torch(x, True), to_torch(weight, True), to_torch(bias, True)
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(to_torch(dy))
    assert_close(y, to_numpy(ty), "y", dtype)
    assert_close(dx, to_numpy(tx.grad), "dx", dtype)
    assert_close(dweight, to_numpy(tw.grad), "dweight", dtype)
    assert_close(dbias, to_numpy(tb.grad), "dbias", dtype)
    assert no_dx is None
    np.testing.assert_array_equal(dweight_again, dweight)


def test_linear_thresholds_cover_both_paths():
    assert dense._n_threads(64, 3136, 128) == numba.get_num_threads()
    assert dense._n_threads(64, 128, 10) == 1


@pytest.mark.parametrize("size", [10, pointwise.PARALLEL_MIN_SIZE + 13], ids=["small", "large"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_relu_kernels_match_torch(size, dtype, n_threads, rng):
    x = rng.standard_normal(size).astype(dtype)
    x[:4] = [np.nan, -0.0, 0.0, -np.inf]
    dy = rng.standard_normal(size).astype(dtype)
    y = pointwise.relu_forward(x.reshape(1, -1))
    dx = pointwise.relu_backward(dy.reshape(1, -1), y)
    tx = to_torch(x, True)
    ty = torch.relu(tx)
    ty.backward(to_torch(dy))
    np.testing.assert_array_equal(y.ravel(), to_numpy(ty))           # NaN stays NaN
    np.testing.assert_array_equal(dx.ravel(), to_numpy(tx.grad))


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_layers_agree_across_backends_and_pass_gradcheck(backend, rng):
    model = nn.Sequential(nn.Linear(700, 400, rng=0, backend=backend), nn.ReLU(backend=backend),
                          nn.Linear(400, 3, rng=1, backend=backend))
    twin = nn.Sequential(nn.Linear(700, 400, rng=0, backend="im2col"),
                         nn.ReLU(backend="im2col"), nn.Linear(400, 3, rng=1, backend="im2col"))
    x = rng.standard_normal((9, 700)).astype(np.float32)
    assert_close(model(x), twin(x), "y")
    dy = rng.standard_normal((9, 3)).astype(np.float32)
    assert_close(model.backward(dy), twin.backward(dy), "dx")
    for (name, ours), (_, theirs) in zip(model.named_parameters(), twin.named_parameters()):
        assert_close(ours.grad, theirs.grad, name)
    small = nn.Sequential(nn.Linear(6, 5, rng=0, backend=backend), nn.ReLU(backend=backend))
    assert minicnn.gradcheck(small, rng.standard_normal((4, 6))).passed(GRADCHECK_TOL)


def test_numba_relu_layer_keeps_the_readable_rule(rng):
    """Kernel and NumPy paths give identical results, NaN included (both are exact)."""
    x = rng.standard_normal((5, 3, 40, 40)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, 0.0, -1.0]
    kernel, numpy_path = nn.ReLU(backend="numba"), nn.ReLU(backend="reference")
    np.testing.assert_array_equal(kernel(x), numpy_path(x))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(kernel.backward(dy), numpy_path.backward(dy))
