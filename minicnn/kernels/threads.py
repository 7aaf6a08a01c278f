"""How many threads the kernels use: Numba's parallel loops and NumPy's BLAS, set together.

The numba backend runs its work in Numba's ``prange`` loops; the one-pool kernels
(:mod:`minicnn.kernels.onepool`) call a single-threaded GEMM from inside those loops, and the
other paths (grouped convolutions, the ``im2col`` backend, plain NumPy code) call NumPy's BLAS,
which has a thread pool of its own. ``--threads 2`` has to reach both (and PyTorch's, when a
benchmark races against it), or a comparison is not fair. BLAS is reached through
`threadpoolctl <https://github.com/joblib/threadpoolctl>`_, which finds whichever BLAS NumPy
loaded (OpenBLAS, MKL, BLIS) and sets its thread count at run time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from functools import lru_cache

import numba

# Which of Numba's threading layers runs the parallel loops. The one-pool kernels never wake
# BLAS's own thread pool (each Numba thread calls a single-threaded GEMM), so Numba's default
# choice, OpenMP, is the fastest: a parallel region costs a few microseconds against tens for
# the "workqueue" layer, which measured LeNet-5's training step at 4.7 ms against 2.3 ms on two
# threads (benchmarks/RESULTS.md). Where NumPy's BLAS exports no in-kernel GEMM, convolutions
# fall back to the relay design, which alternates Numba loops with NumPy's multi-threaded
# matmul; there OpenMP's spinning workers fight OpenBLAS's for the cores (a conv 2.5x slower
# in the first version of this backend), so we pick workqueue. Either way, a layer the user
# chose with NUMBA_THREADING_LAYER wins; it has to be set before Numba starts its pool, i.e.
# before the first parallel kernel runs, and importing the numba backend imports this module
# first. (workqueue must not be entered from two Python threads at once; minicnn never does.)
def _choose_threading_layer() -> None:
    from . import blas

    if "NUMBA_THREADING_LAYER" not in os.environ and not blas.AVAILABLE:
        numba.config.THREADING_LAYER = "workqueue"


_choose_threading_layer()


def threads_for(n_items: int) -> int:
    """How many threads to split ``n_items`` independent items across: one per Numba thread,
    at least one item each, at least one thread.

    Every parallel kernel asks this in Python before it calls compiled code: calling
    ``numba.get_num_threads()`` inside a compiled kernel makes Numba refuse to cache it.
    """
    return max(1, min(numba.get_num_threads(), n_items))


@lru_cache(maxsize=1)
def _blas_controllers():
    """threadpoolctl's controllers for the BLAS libraries loaded in this process (after NumPy),
    or an empty tuple when threadpoolctl finds none."""
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded before we look for it)
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def _set_blas_threads(n: int) -> None:
    for controller in _blas_controllers():
        controller.set_num_threads(n)


@contextlib.contextmanager
def blas_single_threaded():
    """Hold BLAS at one thread inside the block (each Numba thread calls it on its own), then
    restore the count it had. Costs about a microsecond when BLAS is already at one."""
    controllers = _blas_controllers()
    previous = [controller.get_num_threads() for controller in controllers]
    for controller, count in zip(controllers, previous):
        if count != 1:
            controller.set_num_threads(1)
    try:
        yield
    finally:
        for controller, count in zip(controllers, previous):
            if count != 1:
                controller.set_num_threads(count)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in Numba's parallel loops, NumPy's BLAS and (if loaded) PyTorch.

    Numba cannot go above the pool it started with (``NUMBA_NUM_THREADS``, by default the
    number of cores), so ``n`` is capped there.

    Raises
    ------
    ValueError
        If ``n`` is below 1.
    """
    if int(n) < 1:
        raise ValueError(f"set_num_threads: expected at least 1 thread, got {n}")
    n = int(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _set_blas_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def get_num_threads() -> dict:
    """Threads in use now: ``{"numba": ..., "blas": ... or None, "torch": ... (if loaded)}``."""
    controllers = _blas_controllers()
    counts = {"numba": numba.get_num_threads(),
              "blas": controllers[0].get_num_threads() if controllers else None}
    torch = sys.modules.get("torch")
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
    return counts


def blas_info() -> dict:
    """What BLAS NumPy uses: its library file, version and the CPU core kernel it picked
    (``OPENBLAS_CORETYPE`` can force one, e.g. Haswell = AVX2)."""
    info = {"library": None, "config": None, "corename": None}
    controllers = _blas_controllers()
    if controllers:
        details = controllers[0].info()
        info["library"] = details.get("filepath")
        info["config"] = (f"{details.get('internal_api')} {details.get('version')} "
                          f"({details.get('threading_layer')} threads)")
        info["corename"] = details.get("architecture")
    return info
