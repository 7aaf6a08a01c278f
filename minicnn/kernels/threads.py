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

# Numba's default threading layer here is OpenMP, and OpenMP's spinning worker threads fight
# OpenBLAS's for the cores: alternating a parallel Numba loop with a NumPy matmul (which is what
# every convolution did before the one-pool kernels) measured 2.5x slower than with Numba's own
# "workqueue" pool (conv 32->64 3x3 on 64x14x14, forward + backward, 2 cores: 47 ms against
# 19 ms). So unless the user chose a layer, use workqueue. It has to be set before Numba starts
# its pool, i.e. before the first parallel kernel runs; importing the numba backend imports
# this module first. (workqueue must not be entered from two Python threads at once; minicnn
# never does that.)
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


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
