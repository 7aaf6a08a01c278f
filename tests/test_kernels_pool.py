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


def _pool_rule(plane):
    """The rule, written out: cells in row-major order, a later one wins only if it is larger
    or a NaN (ties go to the first, the last NaN sticks)."""
    h, w = plane.shape
    best = np.empty((h // 2, w // 2), plane.dtype)
    where = np.empty((h // 2, w // 2), np.int32)
    for i in range(h // 2):
        for j in range(w // 2):
            value, position = plane[2 * i, 2 * j], 2 * i * w + 2 * j
            for di, dj in ((0, 1), (1, 0), (1, 1)):
                v = plane[2 * i + di, 2 * j + dj]
                if v > value or v != v:
                    value, position = v, (2 * i + di) * w + 2 * j + dj
            best[i, j], where[i, j] = value, position
    return best, where


@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (28, 28), (2, 3)])
def test_branch_free_plane_pooling_follows_the_rule_bit_for_bit(shape, rng):
    """max_pool_plane (compare-and-select over de-interleaved cells) against the rule written
    out, on ReLU-like data: half the cells tie at 0.0 or -0.0, NaNs with different payloads
    (two in one window: the last sticks), odd heights and widths (the last row or column is
    dropped)."""
    from minicnn.kernels.maxpool2x2 import max_pool_plane

    h, w = shape
    plane = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    plane[rng.random(shape) < 0.2] = -0.0
    flat = plane.reshape(-1)
    flat[::7] = np.nan
    if h >= 2 and w >= 2:
        plane[0, 0] = np.float32(np.nan)
        plane[1, 1] = np.frombuffer(np.uint32(0x7FC00001).tobytes(), np.float32)[0]
    source = np.concatenate([np.ones(5, np.float32), flat])     # the plane at an offset
    best = np.zeros(3 + (h // 2) * (w // 2), np.float32)
    where = np.zeros_like(best, dtype=np.int32)
    count = (h // 2) * (w // 2)
    cells, codes = np.empty((4, count), np.float32), np.empty(count, np.int32)
    max_pool_plane(source, 5, h, w, best, 3, where, 3, cells, codes)
    expected, positions = _pool_rule(plane)
    np.testing.assert_array_equal(best[3:].view(np.int32), expected.reshape(-1).view(np.int32))
    np.testing.assert_array_equal(where[3:], positions.reshape(-1))
    values_only = np.zeros_like(best)
    max_pool_plane(source, 5, h, w, values_only, 3, np.empty(0, np.int32), 0, cells, codes)
    np.testing.assert_array_equal(values_only.view(np.int32), best.view(np.int32))
