"""One ONNX Runtime benchmark process: ``python path/to/ort_child.py JOB`` (JSON).

Run by path, not as ``-m minicnn.bench.ort_child``, so that the process imports onnxruntime,
NumPy and the standard library only: no minicnn package (whose import loads Numba and sets
glibc's allocator thresholds) and no PyTorch. Its peak resident memory is then ONNX
Runtime's own, as a user's inference server would have it. The timing helpers come from
``timing.py`` beside this file, loaded by path (it imports NumPy only).

The job names the ``.onnx`` file, the batch and input shape, the thread count, repeats and
warm-up; the input batch is drawn exactly as :func:`minicnn.bench.models.make_inputs` draws it
(``default_rng(0).standard_normal``, float32), so the logits compare with the other
competitors'. Prints one line ``minicnn-bench-result: {...}``, as the other children do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

RESULT_MARK = "minicnn-bench-result: "
RECORDED_ENV_PREFIXES = ("OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "OMP_", "KMP_", "MKL_",
                         "NUMBA_", "GOMP_", "LD_PRELOAD", "MINICNN_")


def _timing_module():
    """``timing.py`` beside this file, imported by path (not through the minicnn package)."""
    name = "_minicnn_bench_timing"
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("timing.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module            # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB.

    On Linux ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this process's own
    memory map), not ``getrusage(RUSAGE_SELF).ru_maxrss``: the kernel carries ``ru_maxrss``
    across ``fork``/``vfork`` + ``execve``, so a child started by a 400 MiB harness reports
    at least 400 MiB whatever it used itself (measured: 312 MiB for a bare ``python -c``
    whose VmHWM was 11 MiB). Elsewhere ``ru_maxrss`` (KiB on Linux and BSD; bytes on macOS,
    converted)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)


def session_options(ort, threads: int):
    """Intra-op threads = ``threads``, one inter-op thread, sequential execution, every graph
    optimisation (what the harness promises; recorded in the result)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def run(job: dict) -> dict:
    """Load the graph, check its output once (``logits``), time ``repeats`` inference calls
    after ``warmup``; return the record (timings in the format of ``Stats.to_dict``)."""
    started = time.perf_counter()
    import numpy as np
    import onnxruntime as ort

    timing = _timing_module()
    shape = (job["batch"], job["in_channels"], job["image_size"], job["image_size"])
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    session = ort.InferenceSession(job["onnx_path"], sess_options=session_options(
        ort, job["threads"]), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    feed = {input_name: x}

    def infer():
        return session.run(None, feed)[0]

    result = {"modes": {}, "logits": None, "load_s": time.perf_counter() - started}
    if job.get("logits"):
        result["logits"] = np.asarray(infer(), dtype=np.float64).tolist()
    stats = timing.time_blocks({"onnxruntime": infer}, job["repeats"], job["warmup"])
    result["modes"]["inference"] = dict(stats["onnxruntime"].to_dict(),
                                        peak_rss_kib=peak_rss_kib())
    environment = {k: os.environ[k] for k in sorted(os.environ)
                   if k.startswith(RECORDED_ENV_PREFIXES)}
    result.update({
        "kind": job["kind"], "competitor": job["competitor"], "model": job["model"],
        "batch": job["batch"], "threads_requested": job["threads"], "pid": os.getpid(),
        "machine": {"cpu_model": _cpu_model(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "onnxruntime": ort.__version__, "torch": None, "minicnn": None},
        "blas": None, "torch": None, "gemm_peak": None, "allocator": None,
        "threads": {"requested": job["threads"], "onnxruntime_intra_op": job["threads"],
                    "onnxruntime_inter_op": 1, "execution_mode": "sequential",
                    "graph_optimization_level": "all"},
        "environment": environment, "imported_minicnn": "minicnn" in sys.modules,
        "imported_torch": "torch" in sys.modules, "peak_rss_kib": peak_rss_kib(),
        # Kept for comparison only: includes the harness's peak (see peak_rss_kib).
        "ru_maxrss_kib": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "child_wall_s": time.perf_counter() - started})
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python ort_child.py JOB_JSON", file=sys.stderr)
        return 2
    print(RESULT_MARK + json.dumps(run(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
