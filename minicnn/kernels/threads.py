"""How many threads the kernels use: Numba's parallel loops and NumPy's BLAS, set together.

The numba backend spends its time in two places: Numba's ``prange`` loops (unrolling,
transposing, pooling) and the BLAS GEMMs NumPy calls. Both have their own thread pool, so
``--threads 2`` has to reach both (and PyTorch's, when a benchmark races against it), or a
comparison is not fair. NumPy's wheels bundle OpenBLAS; we reach it through ``ctypes`` because
its thread count can otherwise only be set by an environment variable *before* NumPy loads.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import lru_cache

import numba

# Numba's default threading layer here is OpenMP, and OpenMP's spinning worker threads fight
# OpenBLAS's for the cores: alternating a parallel Numba loop with a NumPy matmul (which is what
# every convolution does) measured 2.5x slower than with Numba's own "workqueue" pool (conv
# 32->64 3x3 on 64x14x14, forward + backward, 2 cores: 47 ms against 19 ms). So unless the user
# chose a layer, use workqueue. It has to be set before Numba starts its pool, i.e. before the
# first parallel kernel runs; importing the numba backend imports this module first.
# (workqueue must not be entered from two Python threads at once; minicnn never does that.)
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# OpenBLAS symbol names: NumPy >= 2 wheels bundle "scipy_openblas64_" with suffixed symbols,
# system builds use the plain names.
_SUFFIXES = ("scipy_openblas{}64_", "openblas{}64_", "openblas{}")


@lru_cache(maxsize=1)
def _openblas():
    """The OpenBLAS library already loaded into this process by NumPy, or ``None``."""
    import numpy  # noqa: F401  (make sure it is loaded)

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps
                     if "openblas" in line.lower() and ".so" in line.rsplit("/", 1)[-1]}
    except OSError:  # not Linux: leave BLAS to its environment variables
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern in _SUFFIXES:
            if hasattr(library, pattern.format("_set_num_threads").replace("__", "_")):
                return library, pattern
    return None


def _blas_function(name: str):
    found = _openblas()
    if found is None:
        return None
    library, pattern = found
    symbol = pattern.format("_" + name).replace("__", "_")
    return getattr(library, symbol, None)


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
    setter = _blas_function("set_num_threads")
    if setter is not None:
        setter(ctypes.c_int(n))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def get_num_threads() -> dict:
    """Threads in use now: ``{"numba": ..., "blas": ... or None, "torch": ... (if loaded)}``."""
    counts = {"numba": numba.get_num_threads(), "blas": None}
    getter = _blas_function("get_num_threads")
    if getter is not None:
        getter.restype = ctypes.c_int
        counts["blas"] = int(getter())
    torch = sys.modules.get("torch")
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
    return counts


def blas_info() -> dict:
    """What BLAS NumPy uses: its configuration string and the CPU core kernel it picked
    (``OPENBLAS_CORETYPE`` can force one, e.g. Haswell = AVX2)."""
    info = {"library": None, "config": None, "corename": None}
    for key, name in (("config", "get_config"), ("corename", "get_corename")):
        function = _blas_function(name)
        if function is not None:
            function.restype = ctypes.c_char_p
            info[key] = function().decode()
    found = _openblas()
    if found is not None:
        info["library"] = found[0]._name
    return info
