"""minicnn's benchmark harness: layers and whole models, every backend against PyTorch.

Run it as ``minicnn bench`` or ``python benchmarks/run.py`` (same options, see
``benchmarks/README.md``), or from Python::

    from minicnn.bench import main
    main(["--suite", "conv", "--repeats", "5", "--json", "conv.json"])

Modules, one job each: :mod:`.suites` (what is measured, FLOP counts), :mod:`.timing`
(repeats and statistics), :mod:`.machine` (CPU, versions, BLAS, threads, GEMM peak),
:mod:`.agreement` (every backend must compute the same numbers before it is timed),
:mod:`.layers` and :mod:`.models` (layer and whole-model benchmarks), :mod:`.peers` (the
competitors: PyTorch as shipped, channels-last, allocator-tuned and compiled, ONNX Runtime
float and int8, minicnn int8), :mod:`.process` (each library alone in its own process: model
steps, per-call latency, thread scaling and the training-epoch comparison against a PyTorch
script; ONNX Runtime's children run ``ort_child.py``), :mod:`.compile` (Numba's cold and
warm start), :mod:`.report` (JSON, Markdown, PNG) and :mod:`.cli` (options, running).
"""

from .agreement import AgreementError, BenchError
from .cli import add_arguments, build_parser, main, run
from .suites import SUITES

__all__ = ["AgreementError", "BenchError", "SUITES", "add_arguments", "build_parser", "main",
           "run"]
