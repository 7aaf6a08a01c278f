"""What a benchmark ran on: CPU, library versions, BLAS, threads, and the measured GEMM peak.

Every result file carries this record, because a number without its machine cannot be
compared: the same code runs at 250 or 450 GFLOP/s depending on which kernel OpenBLAS picked
(``OPENBLAS_CORETYPE``), and 2.5x slower with one Numba threading layer than another.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np

from .timing import summarize, time_call

#: CPU flags that decide which GEMM kernels can run.
RELEVANT_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo() -> tuple[str | None, set[str], int | None]:
    """(model name, flags, physical cores) from ``/proc/cpuinfo``; Nones off Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None, set(), None
    model, flags, cores = None, set(), set()
    physical = core = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
    return model, flags, (len(cores) or None)


def describe_machine() -> dict:
    """Platform, CPU model, core counts and the CPU flags relevant to GEMM speed."""
    model, flags, physical = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
        "cpu_flags": {flag: flag in flags for flag in RELEVANT_FLAGS} if flags else {},
    }


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_warning(load: list[float] | None, cores: int | None) -> str | None:
    """A note for the report when other work was already running on the machine.

    Returns ``None`` when the 1-minute load average is at most half the usable cores.
    """
    if not load or not cores or load[0] <= cores / 2:
        return None
    return (f"the machine was busy when the run started (1-minute load average {load[0]:g} "
            f"on {cores} usable cores): other processes competed for the cores, which slows "
            "multi-threaded code unevenly (PyTorch's spinning OpenMP threads worst: times stuck "
            "at multiples of ~4 ms); rerun on a quiet machine before comparing numbers")


def describe_versions() -> dict:
    """Versions of Python, NumPy, Numba, PyTorch, onnx and ONNX Runtime (``None`` if not
    imported) and minicnn."""
    import numba

    import minicnn

    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": getattr(torch, "__version__", None),
        "minicnn": minicnn.__version__,
        # Loaded by the harness only when an ONNX Runtime competitor ran (export, int8).
        "onnx": getattr(sys.modules.get("onnx"), "__version__", None),
        "onnxruntime": getattr(sys.modules.get("onnxruntime"), "__version__", None),
    }


def describe_blas() -> dict:
    """NumPy's BLAS: library path, configuration, chosen core kernel, ``OPENBLAS_CORETYPE``."""
    from ..kernels import threads

    info = dict(threads.blas_info())
    info["openblas_coretype_env"] = os.environ.get("OPENBLAS_CORETYPE")
    return info


def describe_threads(requested: int) -> dict:
    """Thread counts in force and Numba's threading layer.

    ``numba_threading_layer`` is the layer actually running (known once a parallel kernel
    has run, else ``None``); ``numba_threading_layer_config`` is what was asked for.
    """
    import numba

    from ..kernels import threads

    counts = threads.get_num_threads()
    try:
        active = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        active = None
    env = {name: os.environ.get(name) for name in
           ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
            "NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    return {
        "requested": requested,
        "numba": counts.get("numba"),
        "blas": counts.get("blas"),
        "torch": counts.get("torch"),
        "numba_threading_layer": active,
        "numba_threading_layer_config": numba.config.THREADING_LAYER,
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
        "environment": {k: v for k, v in env.items() if v is not None},
    }


#: Environment variables recorded (never changed) with every result: BLAS kernel choice and
#: cache size, the allocator's tunables, and thread settings.
RECORDED_ENV_PREFIXES = ("OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "OMP_", "KMP_", "MKL_",
                         "NUMBA_", "GOMP_", "LD_PRELOAD")


def describe_environment(environ=None) -> dict:
    """The environment variables that change speed: ``OPENBLAS_*`` (``OPENBLAS_CORETYPE``,
    ``OPENBLAS_L2_SIZE``, ...), ``MALLOC_*`` and ``GLIBC_TUNABLES`` (glibc's allocator),
    ``OMP_*``/``KMP_*``/``GOMP_*``, ``MKL_*``, ``NUMBA_*`` and ``LD_PRELOAD``, as set."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ) if k.startswith(RECORDED_ENV_PREFIXES)}


def describe_torch() -> dict | None:
    """PyTorch's own CPU setup when it is loaded: version, intra- and inter-op threads, the
    SIMD level its kernels dispatch to (``AVX512``, ``AVX2``, ...), oneDNN availability."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cpu_capability": None,
            "mkldnn": bool(torch.backends.mkldnn.is_available())}
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        pass
    return info


def measure_core_peak(size: int = 1024, repeats: int = 7, warmup: int = 2) -> dict:
    """:func:`measure_gemm_peak` with BLAS held at one thread: the single-core GEMM rate that
    per-core fractions (``fraction_of_core_peak``) are taken of."""
    from ..kernels.threads import blas_single_threaded

    with blas_single_threaded():
        return measure_gemm_peak(size, repeats, warmup, with_torch=False)


def measure_gemm_peak(size: int = 1024, repeats: int = 7, warmup: int = 2,
                      with_torch: bool = True) -> dict:
    """The machine's float32 GEMM rate as NumPy reaches it: ``C = A @ B`` with square
    ``size x size`` matrices at the thread count now set, median over ``repeats``.

    This is the "peak" every layer's FLOP rate is divided by: what the BLAS minicnn calls
    can do on this machine with these threads, not the CPU's theoretical number. PyTorch's
    rate on the same product is recorded beside it when PyTorch is loaded (and
    ``with_torch``).

    Returns
    -------
    dict
        ``{"size", "gflops", "median_ms", "iqr_ms", "repeats", "torch_gflops"}``.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), dtype=np.float32)
    flops = 2.0 * size ** 3
    for _ in range(warmup):
        np.matmul(a, b, out=c)
    stats = summarize(time_call(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    result = {"size": size, "dtype": "float32", "gflops": flops / stats.median / 1e9,
              "median_ms": stats.median * 1e3, "iqr_ms": stats.iqr * 1e3,
              "repeats": repeats, "torch_gflops": None}
    torch = sys.modules.get("torch")
    if torch is not None and with_torch:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty((size, size), dtype=torch.float32)
        for _ in range(warmup):
            torch.matmul(ta, tb, out=tc)
        torch_stats = summarize(time_call(lambda: torch.matmul(ta, tb, out=tc))
                                for _ in range(repeats))
        result["torch_gflops"] = flops / torch_stats.median / 1e9
    return result


def combine_peaks(start: dict, end: dict) -> dict:
    """One GEMM-peak record from the measurements at the start and the end of a run.

    The peak used for fractions (``gflops``) is the higher of the two: what the machine
    reached when it was least disturbed. Both measurements are kept, and ``drift`` is their
    relative difference (a large drift means the load changed during the run).
    """
    best = max(start["gflops"], end["gflops"])
    return {"gflops": best, "size": start["size"], "dtype": start["dtype"],
            "repeats": start["repeats"], "start_gflops": start["gflops"],
            "end_gflops": end["gflops"], "drift": abs(end["gflops"] / start["gflops"] - 1),
            "torch_gflops": start.get("torch_gflops"), "start": start, "end": end}
