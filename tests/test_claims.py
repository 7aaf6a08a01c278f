"""kernels.claims: an atomic counter that parallel threads claim work items from."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numba import njit, prange

from minicnn.kernels.claims import claim


@njit(parallel=True)
def _claim_all(counters, taken, n_threads):
    """Every thread claims items until none is left, marking each item it got."""
    for thread in prange(n_threads):
        while True:
            item = claim(counters, 1)
            if item >= taken.shape[0]:
                break
            taken[item] += 1
            work = 0.0                  # long enough for the threads to interleave
            for i in range(2000):
                work += i * 0.5
            if work < 0:
                taken[item] = -100


@pytest.mark.parametrize("items", [0, 1, 7, 5000])
def test_every_item_is_claimed_exactly_once(items):
    threads = max(2, numba.get_num_threads())
    counters = np.array([123, 0, 456], dtype=np.int64)
    taken = np.zeros(items, dtype=np.int64)
    _claim_all(counters, taken, threads)
    np.testing.assert_array_equal(taken, 1)
    # Each thread's last claim found nothing left; the neighbours were not touched.
    assert list(counters) == [123, items + threads, 456]


@njit
def _claim_three(counters):
    return claim(counters, 0), claim(counters, 0), claim(counters, np.int32(0))


def test_a_claim_returns_the_value_before_it():
    counters = np.array([5], dtype=np.int64)
    assert _claim_three(counters) == (5, 6, 7)
    assert counters[0] == 8


def test_only_an_int64_vector_is_a_counter():
    @njit
    def on_floats(values):
        return claim(values, 0)

    with pytest.raises(numba.core.errors.TypingError):
        on_floats(np.zeros(2))
