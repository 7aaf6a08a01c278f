"""A single-threaded GEMM callable from inside compiled Numba code.

The one-pool kernels (:mod:`minicnn.kernels.onepool`) run a whole layer as one parallel loop
over the batch, and each thread multiplies its own samples' matrices. For that the GEMM must be
callable from ``@njit(parallel=True)`` code without going back to Python (and without taking
the GIL). NumPy >= 2 wheels bundle OpenBLAS and export its CBLAS entry points under a suffixed
name (``scipy_cblas_sgemm64_``: 64-bit integer sizes), so we load that library into LLVM's
symbol table and declare the two functions to Numba as external C functions. Declaring them
(rather than holding a ``ctypes`` function pointer as a global) is what lets Numba cache the
compiled kernels on disk: a ctypes pointer is a run-time address, a declared symbol is resolved
again by name in every process.

BLAS's own thread pool must be held at one thread while the kernels run (each of our threads
calls the GEMM); :mod:`minicnn.kernels.threads` does that with ``threadpoolctl``.

Where NumPy's BLAS exports no such symbol (another build of NumPy, MKL, Accelerate),
:data:`AVAILABLE` is ``False`` and callers fall back to the kernels that use ``numpy @``.

Only CBLAS's row-major interface is used: ``C = alpha * op(A) @ op(B) + beta * C``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding
from numba import types
from numba.extending import overload

#: ``order`` and ``trans`` arguments of CBLAS (from ``cblas.h``).
ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

# Suffixed names with 64-bit integers, as the NumPy and SciPy wheels' OpenBLAS export them.
_CANDIDATES = ("scipy_cblas_{}64_", "cblas_{}64_")


def _find_library_and_names() -> tuple[str | None, str | None, str | None, str | None]:
    """``(library path, sgemm name, dgemm name, core kernel)`` of the OpenBLAS NumPy loaded
    (the core as threadpoolctl reports it, e.g. ``"SkylakeX"`` or ``"Haswell"``), or ``None``s."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a declared dependency
        return None, None, None, None
    import ctypes

    for entry in threadpool_info():
        if entry.get("user_api") != "blas" or entry.get("internal_api") != "openblas":
            continue
        path = entry["filepath"]
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern in _CANDIDATES:
            single, double = pattern.format("sgemm"), pattern.format("dgemm")
            if hasattr(library, single) and hasattr(library, double):
                return path, single, double, entry.get("architecture")
    return None, None, None, None


def _declare(name: str, scalar) -> types.ExternalFunction:
    """``void gemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)``."""
    i32, i64, ptr = types.int32, types.int64, types.voidptr
    signature = types.void(i32, i32, i32, i64, i64, i64, scalar, ptr, i64, ptr, i64, scalar,
                           ptr, i64)
    return types.ExternalFunction(name, signature)


LIBRARY, SGEMM_NAME, DGEMM_NAME, CORE = _find_library_and_names()
AVAILABLE = LIBRARY is not None

if AVAILABLE:
    binding.load_library_permanently(LIBRARY)
    sgemm = _declare(SGEMM_NAME, types.float32)
    dgemm = _declare(DGEMM_NAME, types.float64)
else:  # pragma: no cover - depends on how NumPy was built
    sgemm = dgemm = None


def describe() -> str:
    """One line for benchmark reports: which GEMM the one-pool kernels call."""
    if not AVAILABLE:
        return "no in-kernel GEMM (NumPy's BLAS exports no 64-bit CBLAS symbols)"
    return f"{SGEMM_NAME} / {DGEMM_NAME} from {LIBRARY} (core {CORE})"


def dtype_supported(dtype) -> bool:
    """Whether the in-kernel GEMM exists for ``dtype`` (float32 and float64 only)."""
    return AVAILABLE and np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------------------------
# The GEMM as compiled code calls it, chosen by dtype at compile time
# --------------------------------------------------------------------------------------------
def gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):  # pragma: no cover
    """``c = op(a) @ op(b) + beta * c`` (row-major CBLAS) on C-contiguous arrays, from compiled
    code only (see the overload below); single-threaded while :mod:`.threads` holds BLAS at
    one thread."""
    raise NotImplementedError("gemm is only callable from compiled code")


# Module globals, not closure variables: a closure over an external function makes Numba
# refuse to cache the kernels that call it.
_SGEMM, _DGEMM = sgemm, dgemm


@overload(gemm, jit_options=dict(nogil=True))
def _gemm_overload(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    if a.dtype == types.float32:
        def impl(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
            _SGEMM(ROW_MAJOR, trans_a, trans_b, m, n, k, np.float32(1.0), a.ctypes, lda,
                   b.ctypes, ldb, np.float32(beta), c.ctypes, ldc)
        return impl
    if a.dtype == types.float64:
        def impl(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
            _DGEMM(ROW_MAJOR, trans_a, trans_b, m, n, k, np.float64(1.0), a.ctypes, lda,
                   b.ctypes, ldb, np.float64(beta), c.ctypes, ldc)
        return impl
    return None
