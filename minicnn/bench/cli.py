"""The benchmark's command line (``minicnn bench`` and ``python benchmarks/run.py``) and the
function that runs a whole suite and collects one result dictionary.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .. import allocator
from ..argtypes import name_list, non_negative_int, positive_float, positive_int
from .agreement import BenchError
from .peers import PEERS, parse_competitors
from .suites import SUITES, get_suite

ALL_BACKENDS = ("reference", "im2col", "numba", "torch")
DEFAULT_BACKENDS = ("im2col", "numba", "torch")
SCHEMA = "minicnn-bench/1"

DESCRIPTION = """\
Time minicnn's layers (every kernel backend, forward and backward), whole training
steps and inference (each library alone in its own process, at 2 and 1 threads:
ratios to the best peer and to each of PyTorch NCHW, channels-last, channels-last
with minicnn's allocator settings, torch.compile, ONNX Runtime float and int8,
thread scaling, peak memory), per-call latency (batch 1: median and p99) and a
training epoch (minicnn train against a plain PyTorch script) on this machine,
after checking that all backends agree; report GFLOP/s, the fraction of the
measured GEMM peak (all threads, and single-thread per core) and the ratios. See
benchmarks/README.md for every column."""

EXAMPLES = """examples:
  minicnn bench                                       the standard suite, a table here
  minicnn bench --suite conv --backends reference,im2col,numba,torch --json out.json --plot out.png
  minicnn bench --suite models --batch-size 64 --processes 3    each library in its own processes,
                                                      2 and 1 thread(s), thread scaling
  minicnn bench --suite models --blas-native          children without OPENBLAS_CORETYPE/_L2_SIZE
  minicnn bench --suite models --in-process --no-interleave     the old one-process mode
  minicnn bench --suite epoch --processes 3           minicnn train epoch vs a PyTorch script
  minicnn bench --suite epoch --limit 5000 --processes 1        a shorter epoch
  minicnn bench --suite models --batch-size 64 --competitors all      every peer: torch,
                                                      torch-cl, torch-tuned, torch-compile,
                                                      onnxruntime(-int8), minicnn-int8
  minicnn bench --suite latency --competitors all     batch-1 median and p99 per call
  python benchmarks/run.py --suite pool --repeats 50 --markdown pool.md
"""


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------
def _thread_list(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"empty entry in {text!r}; expected e.g. 2,1")
    return tuple(dict.fromkeys(positive_int(part) for part in parts))


def _model_list(text: str) -> tuple[str, ...]:
    from ..models import MODELS

    return name_list(text, tuple(MODELS), "model(s)", "lenet5,mnist-cnn")


def _backend_list(text: str) -> tuple[str, ...]:
    return name_list(text, ALL_BACKENDS, "backend(s)", "im2col,numba")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (shared by both entry points)."""
    suites = "; ".join(f"{name}: {suite.description}" for name, suite in SUITES.items())
    parser.add_argument("--suite", default="standard", choices=list(SUITES),
                        help=f"what to run (default standard). {suites}")
    parser.add_argument("--backends", type=_backend_list, default=None, metavar="LIST",
                        help="comma-separated, from " + ", ".join(ALL_BACKENDS) +
                             f" (default {','.join(DEFAULT_BACKENDS)}; reference is slow, so "
                             "opt-in and limited by --reference-max-gflop); torch adds a "
                             "channels-last torch-cl column for pooling, and for models and "
                             "epochs in separate processes")
    parser.add_argument("--repeats", type=positive_int, metavar="N", default=20,
                        help="timed repeats per measurement (per process when models run in "
                             "separate processes; default 20)")
    parser.add_argument("--warmup", type=non_negative_int, metavar="N", default=3,
                        help="untimed runs before the repeats (epoch suite: untimed training "
                             "steps on a throwaway model before the epoch; default 3)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N", default=None,
                        help="override every case's batch size (default: 64 for layers, "
                             "64 and 128 for models, 8 in the tiny suite)")
    parser.add_argument("--threads", type=positive_int, metavar="N", default=2,
                        help="threads for Numba, NumPy's BLAS and PyTorch (default 2)")
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None,
                               help="also measure Numba's cold and warm start "
                                    "(default: on for the standard suite only)")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false",
                               help="skip the Numba compile measurement")
    parser.add_argument("--reference-max-gflop", type=positive_float, default=0.5,
                        metavar="GFLOP",
                        help="the reference backend skips layers (and models with a layer) "
                             "needing more forward GFLOP than this (default 0.5); it is timed "
                             "with at most 3 repeats and 1 warm-up")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--separate-processes", dest="model_runs", action="store_const",
                      const="process", default=None,
                      help="models: each competitor alone in its own Python process (minicnn, "
                           "torch NCHW, torch channels-last, alternating; median over "
                           "--processes processes). The default for every suite but tiny")
    runs.add_argument("--in-process", dest="model_runs", action="store_const",
                      const="in-process",
                      help="models: every competitor in this one process, timed in turns "
                           "(the older mode; the default of the tiny suite)")
    parser.add_argument("--no-interleave", dest="interleave", action="store_false",
                        help="with --in-process (implies it): run each competitor's repeats "
                             "back to back instead of in turns")
    parser.add_argument("--processes", type=positive_int, metavar="K", default=3,
                        help="separate processes / epoch suite: processes per competitor and "
                             "setting; the median over them is reported (default 3)")
    parser.add_argument("--thread-counts", type=_thread_list, metavar="LIST", default=None,
                        help="separate processes / epoch suite: thread counts to run, e.g. 2,1 "
                             "(default: --threads and 1 for model steps, giving the "
                             "thread-scaling table; --threads alone for epochs)")
    parser.add_argument("--blas-native", action="store_true",
                        help="start the child processes without OPENBLAS_CORETYPE and "
                             "OPENBLAS_L2_SIZE (removed in the children only), so OpenBLAS "
                             "picks this CPU's own kernels; the report says which was used")
    parser.add_argument("--competitors", type=parse_competitors, metavar="LIST", default=None,
                        help="separate processes (models, latency, epoch suites): the peers "
                             "to race, comma-separated from " + ", ".join(PEERS) + ", or "
                             "all (default: torch,torch-cl when --backends has torch). "
                             "torch-tuned = channels-last with minicnn's glibc allocator "
                             "thresholds; torch-compile = torch.compile of it (compile time "
                             "reported apart); onnxruntime(-int8) and minicnn-int8 run "
                             "inference only")
    parser.add_argument("--calls", type=positive_int, metavar="N", default=300,
                        help="latency suite: timed calls per process at batch 1, for the "
                             "median and 99th percentile per call (default 300; larger "
                             "batches time --repeats calls)")
    parser.add_argument("--models", type=_model_list, metavar="LIST", default=None,
                        help="only these networks of the suite's model cases, e.g. mnist-cnn")
    from ..data import dataset_names

    parser.add_argument("--dataset", default="mnist", choices=dataset_names(),
                        help="epoch suite: the data set (default mnist; synthetic needs no "
                             "files)")
    parser.add_argument("--limit", type=positive_int, metavar="N", default=None,
                        help="epoch suite: train on only the first N images (and test on N), "
                             "as minicnn train --limit")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="epoch suite: where to look for the data set first (else "
                             "$MINICNN_DATA_DIR and the usual places)")
    parser.add_argument("--json", metavar="FILE", help="write every result and the machine "
                                                      "record as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the Markdown report")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG chart")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr and no table on stdout")
    return parser


def build_parser(prog: str = "minicnn bench") -> argparse.ArgumentParser:
    """A stand-alone parser (``python benchmarks/run.py``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_arguments(parser)



# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------
def _prepare_torch(backends, explicit: bool, notes: list[str]) -> tuple[str, ...]:
    """Import PyTorch now (before the thread count is set) if it is wanted."""
    if "torch" not in backends:
        return tuple(backends)
    try:
        import torch  # noqa: F401
    except ImportError:
        if explicit:
            raise BenchError("--backends includes torch but PyTorch is not installed "
                             "(pip install -e '.[torch]'), or leave torch out") from None
        notes.append("PyTorch is not installed: no torch column and no ratio to PyTorch")
        return tuple(b for b in backends if b != "torch")
    return tuple(backends)


def _model_runs(args: argparse.Namespace, suite) -> str:
    """"process" or "in-process": the flag, else ``--no-interleave`` (in-process only), else
    the suite's default."""
    if args.model_runs is not None:
        if args.model_runs == "process" and not args.interleave:
            raise BenchError("--no-interleave applies to --in-process runs only")
        runs = args.model_runs
    else:
        runs = "in-process" if not args.interleave else suite.model_runs
    if suite.latency and runs == "in-process":
        raise BenchError("the latency suite runs each competitor in its own process; drop "
                         "--in-process/--no-interleave")
    if getattr(args, "competitors", None) and (
            not suite.models or (runs == "in-process" and not suite.epoch)):
        raise BenchError("--competitors applies to the separate-process suites (models, "
                         "latency, epoch); suite " + suite.name + " runs "
                         + ("no models" if not suite.models else "its models in-process"))
    return runs


def _thread_counts(args: argparse.Namespace, suite, model_runs: str) -> tuple[int, ...]:
    if args.thread_counts is not None:
        if model_runs == "in-process" and not suite.epoch and suite.models:
            raise BenchError("--thread-counts needs separate processes (drop --in-process); "
                             "in-process runs use --threads")
        return args.thread_counts
    if suite.epoch:
        return (args.threads,)
    return tuple(dict.fromkeys((args.threads, 1)))


def _select_suite(args: argparse.Namespace):
    """The suite ``args`` name, at its batch size, limited to ``--models``."""
    suite = get_suite(args.suite).with_batch(args.batch_size)
    if args.models is not None:
        suite = replace(suite, models=tuple(c for c in suite.models if c.model in args.models))
        if not suite.models:
            raise BenchError(f"--models {','.join(args.models)}: suite {suite.name} has no "
                             "such model case")
    return suite


def _blas_native_notes(args, suite, in_children: bool, blas_env: dict) -> list[str]:
    """What ``--blas-native`` changed, and what it could not change, as report notes."""
    from . import process as process_bench

    if not args.blas_native:
        return []
    notes = []
    kept = ", ".join(f"{k}={v}" for k, v in blas_env.items() if v)
    if in_children:
        notes.append("--blas-native: the child processes ran without "
                     + ", ".join(process_bench.BLAS_ENV) + " (OpenBLAS's own choice of "
                     "kernels for this CPU)" + (f"; this process kept {kept}" if kept else ""))
    if suite.layers or (suite.models and not in_children):
        notes.append("--blas-native changes only child processes: the layers, the GEMM "
                     "peak and in-process models ran in this process with its "
                     "environment (run `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
                     "minicnn bench ...` for them)")
    return notes


def _bench_layers(suite, backends, args, say) -> tuple[list, list]:
    """Every layer case of the suite: ``(records, skipped)``."""
    from . import layers as layer_bench

    records, skipped = [], []
    for case in suite.layers:
        done, missed = layer_bench.bench_layer(case, backends, args.repeats, args.warmup,
                                               args.reference_max_gflop, log=say)
        records += done
        skipped += missed
    layer_bench.attach_ratios(records)
    return records, skipped


def _bench_models(suite, backends, args, thread_counts, in_children: bool, say) -> dict:
    """The suite's model cases: training steps and inference, or whole epochs, each
    competitor in its own process (``in_children``) or all in this one."""
    from . import models as model_bench
    from . import process as process_bench

    out = {"models": [], "latency": [], "scaling": [], "epochs": [], "process_runs": [],
           "process_peaks": None, "skipped": []}
    if suite.models and in_children:
        child_backends = [b for b in backends if b != "reference"]
        if "reference" in backends:
            out["skipped"].append({"name": "models", "backend": "reference",
                                   "reason": "the reference backend is not timed in separate "
                                             "processes (use --in-process)"})
        if suite.epoch:
            say(f"epochs: each competitor alone in its own process, {args.processes} each ...")
            done = process_bench.bench_epoch(
                suite.models, child_backends, thread_counts, args.processes, args.warmup,
                dataset=args.dataset, limit=args.limit, data_dir=args.data_dir,
                blas_native=args.blas_native, log=say, competitors=args.competitors)
            out["epochs"] = done["records"]
        else:
            say(("latency: inference call by call" if suite.latency else "model steps")
                + ", each competitor alone in its own process ...")
            done = process_bench.bench_models(
                suite.models, child_backends, thread_counts, args.processes, args.repeats,
                args.warmup, blas_native=args.blas_native, log=say,
                competitors=args.competitors,
                modes=("inference",) if suite.latency else None,
                calls=args.calls if suite.latency else None)
            out["latency" if suite.latency else "models"] = done["records"]
            out["scaling"] = done["scaling"]
            out["process_peaks"] = done["peaks"]
        out["skipped"] += done["skipped"]
        out["process_runs"] = done["runs"]
        return out
    for case in suite.models:
        records, missed = model_bench.bench_model(case, backends, args.repeats, args.warmup,
                                                  args.reference_max_gflop,
                                                  interleave=args.interleave, log=say)
        out["models"] += records
        out["skipped"] += missed
    return out


def _config_record(args, suite, backends, in_children: bool, thread_counts,
                   do_compile) -> dict:
    """The report's ``config`` section: what was asked for and how it ran."""
    return {"suite": suite.name, "backends": list(backends), "repeats": args.repeats,
            "warmup": args.warmup, "batch_size": args.batch_size,
            "threads": args.threads, "reference_max_gflop": args.reference_max_gflop,
            "dtype": "float32", "layout": "NCHW", "compile": bool(do_compile),
            "interleave": args.interleave,
            "model_runs": "process" if in_children else "in-process",
            "processes": args.processes if in_children else None,
            "thread_counts": list(thread_counts) if in_children else [args.threads],
            "blas_native": bool(args.blas_native),
            "child_blas_env": ("native (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed)"
                               if args.blas_native else "inherited") if in_children else None,
            "models": list(args.models) if args.models else None,
            "competitors": list(args.competitors) if args.competitors else None,
            "calls": args.calls if suite.latency else None,
            "latency": bool(suite.latency),
            "dataset": args.dataset if suite.epoch else None,
            "limit": args.limit if suite.epoch else None}


def run(args: argparse.Namespace, log=None) -> dict:
    """Run the suite described by parsed ``args`` and return the result dictionary.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser built with :func:`add_arguments`.
    log : callable or None
        Receives progress lines.

    Raises
    ------
    BenchError
        If backends disagree (:class:`~.agreement.AgreementError`), PyTorch is asked for
        but missing, options contradict each other or a child process fails.
    """
    from ..kernels.threads import set_num_threads
    from . import layers as layer_bench
    from . import machine
    from . import models as model_bench
    from . import process as process_bench
    from .compile import measure_compile

    say = log or (lambda line: None)
    started = time.time()
    load_start = machine.load_average()
    notes: list[str] = []
    suite = _select_suite(args)
    model_runs = _model_runs(args, suite)
    thread_counts = _thread_counts(args, suite, model_runs)
    in_children = bool(suite.models) and (suite.epoch or model_runs == "process")
    backends = _prepare_torch(args.backends or DEFAULT_BACKENDS, args.backends is not None,
                              notes)
    set_num_threads(args.threads)  # after importing torch, so that its pool is set too
    if "reference" in backends:
        notes.append(f"reference backend: layers needing more than {args.reference_max_gflop:g} "
                     "forward GFLOP are skipped; at most 3 repeats and 1 warm-up elsewhere")
    environment = machine.describe_environment()
    blas_env = {name: os.environ.get(name) for name in process_bench.BLAS_ENV}
    notes += _blas_native_notes(args, suite, in_children, blas_env)

    say(f"minicnn bench: suite {suite.name}, backends {','.join(backends)}, "
        f"{args.threads} thread(s), {args.repeats} repeats after {args.warmup} warm-up"
        + (f"; models in separate processes ({args.processes} per competitor, threads "
           f"{','.join(map(str, thread_counts))})" if in_children else ""))
    peak_repeats = max(3, min(7, args.repeats))
    peak_start = machine.measure_gemm_peak(repeats=peak_repeats, warmup=1)
    core_start = machine.measure_core_peak(repeats=peak_repeats, warmup=1)
    say(f"GEMM peak (NumPy float32 {peak_start['size']}^3): {peak_start['gflops']:.1f} GFLOP/s "
        f"at {args.threads} thread(s), {core_start['gflops']:.1f} at 1")

    layer_records, skipped = _bench_layers(suite, backends, args, say)
    models = _bench_models(suite, backends, args, thread_counts, in_children, say)
    skipped += models["skipped"]

    compiled = None
    do_compile = suite.compile_default if args.compile is None else args.compile
    if do_compile:
        say("Numba compile cost: two fresh processes (cold, then warm cache) ...")
        compiled = measure_compile(args.threads)
        say(f"  layers: cold first call {compiled['cold']['first_call_s']:.2f} s, warm first "
            f"call {compiled['warm']['first_call_s']:.2f} s; the MNIST CNN's plan: cold "
            f"{compiled['plan']['cold']['first_call_s']:.2f} s, warm "
            f"{compiled['plan']['warm']['first_call_s']:.2f} s")

    peak_end = machine.measure_gemm_peak(repeats=peak_repeats, warmup=1, with_torch=False)
    core_end = machine.measure_core_peak(repeats=peak_repeats, warmup=1)
    peak = machine.combine_peaks(peak_start, peak_end)
    core_peak = machine.combine_peaks(core_start, core_end)
    description = machine.describe_machine()
    used = min(args.threads, description.get("usable_cores") or args.threads)
    layer_bench.attach_fractions(layer_records, peak["gflops"], core_peak["gflops"], used)
    if not in_children:
        model_bench.attach_fractions(models["models"], peak["gflops"], core_peak["gflops"],
                                     used)
    if peak["drift"] > 0.2:
        notes.append(f"the GEMM rate changed by {peak['drift']:.0%} during the run "
                     f"({peak['start_gflops']:.0f} -> {peak['end_gflops']:.0f} GFLOP/s): the "
                     "load on the machine changed, so results from early and late in the run "
                     "are not comparable")
    busy = machine.busy_warning(load_start, description.get("usable_cores"))
    if busy:
        notes.append(busy)
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
                   .isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "command": " ".join(sys.argv),
        "config": _config_record(args, suite, backends, in_children, thread_counts,
                                 do_compile),
        "machine": description,
        "load_average": {"start": load_start, "end": machine.load_average()},
        "versions": machine.describe_versions(),
        "blas": machine.describe_blas(),
        "threads": machine.describe_threads(args.threads),
        "environment": environment,
        "allocator": allocator.status(),
        "gemm_peak": peak,
        "gemm_core_peak": core_peak,
        "layers": layer_records,
        "models": models["models"],
        "latency": models["latency"],
        "scaling": models["scaling"],
        "epochs": models["epochs"],
        "process_runs": models["process_runs"],
        "process_peaks": models["process_peaks"],
        "compile": compiled,
        "skipped": skipped,
        "notes": notes,
    }


def write_outputs(results: dict, args: argparse.Namespace) -> str:
    """Write the files asked for by ``args``; return the Markdown report."""
    from . import report

    text = report.markdown(results)
    if args.json:
        report.write_json(results, args.json)
    if args.markdown:
        report.write_markdown(results, args.markdown)
    if args.plot:
        report.write_plot(results, args.plot)
    return text


_OUTPUTS = (("--json", "json"), ("--markdown", "markdown"), ("--plot", "plot"))


def check_output_paths(args: argparse.Namespace) -> None:
    """Refuse, before any benchmark runs, an output file that cannot be written: a folder, or
    a file in a folder that cannot be created or written to (:class:`BenchError`, one line
    naming the option)."""
    for flag, name in _OUTPUTS:
        value = getattr(args, name, None)
        if not value:
            continue
        path = Path(value)
        if path.is_dir():
            raise BenchError(f"{flag} {value}: is a folder; give a file name")
        folder = path.parent
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise BenchError(f"{flag} {value}: cannot create the folder {folder} "
                             f"({existing} is a file)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise BenchError(f"{flag} {value}: cannot write into {existing} (permission "
                             "denied)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run, write the outputs, print the table (unless ``--quiet``); exit status 0."""
    check_output_paths(args)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    results = run(args, log=log)
    try:
        text = write_outputs(results, args)
    except OSError as error:
        raise BenchError(f"cannot write the results: {error.strerror or error}"
                         f"{f' ({error.filename})' if error.filename else ''}") from None
    if not args.quiet:
        print(text)
        for flag, path in (("JSON", args.json), ("Markdown", args.markdown),
                           ("chart", args.plot)):
            if path:
                print(f"{flag}: {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str = "minicnn bench") -> int:
    """Entry point of ``python benchmarks/run.py``: parse ``argv`` and run.

    Returns the exit status: 0 success, 1 a benchmark error (printed as one line), 2 bad
    arguments (from argparse), 130 interrupted.
    """
    args = build_parser(prog).parse_args(argv)
    try:
        return run_from_args(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (BenchError, OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
