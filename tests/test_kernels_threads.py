"""``minicnn.kernels.threads``: one call sets Numba's and BLAS's thread counts (BLAS through
threadpoolctl, checked against threadpoolctl's own view), and the kernels' BLAS hold is scoped."""

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from minicnn.kernels import threads


def blas_threads_seen_by_threadpoolctl():
    return {entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"}


@pytest.fixture
def restore_threads():
    before = threads.get_num_threads()
    yield
    threads.set_num_threads(max(before["numba"], 1))
    if before["blas"] is not None:
        threads._set_blas_threads(before["blas"])


def test_set_num_threads_reaches_numba_and_blas(restore_threads):
    threads.set_num_threads(1)
    assert numba.get_num_threads() == 1
    assert blas_threads_seen_by_threadpoolctl() <= {1}
    assert threads.get_num_threads()["blas"] in (None, 1)
    top = numba.config.NUMBA_NUM_THREADS
    threads.set_num_threads(top + 3)       # Numba is capped at its pool, BLAS takes the count
    assert numba.get_num_threads() == top
    assert blas_threads_seen_by_threadpoolctl() <= {top + 3}


@pytest.mark.parametrize("bad", [0, -2])
def test_set_num_threads_refuses_fewer_than_one(bad):
    with pytest.raises(ValueError, match="at least 1 thread"):
        threads.set_num_threads(bad)


def test_blas_single_threaded_is_scoped_and_restores_on_error(restore_threads):
    if not threads._blas_controllers():
        pytest.skip("threadpoolctl finds no BLAS in this process")
    threads._set_blas_threads(2)
    with pytest.raises(RuntimeError):
        with threads.blas_single_threaded():
            assert blas_threads_seen_by_threadpoolctl() == {1}
            raise RuntimeError("inside")
    assert blas_threads_seen_by_threadpoolctl() == {2}


def test_blas_info_names_the_library_numpy_uses():
    info = threads.blas_info()
    if not threads._blas_controllers():
        pytest.skip("threadpoolctl finds no BLAS in this process")
    paths = {entry["filepath"] for entry in threadpool_info() if entry["user_api"] == "blas"}
    assert info["library"] in paths
    assert info["corename"]          # e.g. "Haswell" or "SkylakeX"
