"""2x2 max pooling on the numba backend, on inputs large enough for its parallel driver (the
backend grid's small inputs run on the calling thread), against PyTorch at 1 and 2 threads."""

import numba
import numpy as np
import pytest

from minicnn.kernels import numba_backend
from torch_oracle import to_numpy, to_torch

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", [(4, 33, 31, 33), (3, 16, 64, 64)], ids=["odd", "even"])
def test_large_2x2_max_pool_matches_torch(shape, n_threads, rng):
    assert np.prod(shape) >= numba_backend.POOL_PARALLEL_MIN_SIZE
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, :2, :2] = [[1.0, 1.0], [1.0, 0.5]]            # a tie: the first cell wins
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        y, ctx = numba_backend.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0))
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = numba_backend.maxpool2d_backward(dy, ctx)
    finally:
        numba.set_num_threads(previous)
    tx = to_torch(x, True)
    ty = torch.nn.functional.max_pool2d(tx, 2)
    ty.backward(to_torch(dy))
    np.testing.assert_array_equal(y, to_numpy(ty))
    np.testing.assert_array_equal(dx, to_numpy(tx.grad))
