"""Each library alone in its own process: model steps and whole training epochs.

Timing minicnn and PyTorch inside one process lets each library's idle worker threads slow the
other down (PyTorch's OpenMP workers spin after every parallel region, OpenBLAS's after every
GEMM). A user runs one library, so by default the harness times each competitor in a fresh
Python process of its own and only collects the numbers:

- **model steps** (:func:`bench_models`): one process per (competitor, model, batch, thread
  count) builds its model, warms up, times ``repeats`` inference batches and then ``repeats``
  training steps (the modes the competitor has: ONNX Runtime and int8 infer only), and
  reports the median, 99th percentile and its own peak resident memory after each. The
  latency suite is the same with inference only, ``--calls`` calls at batch 1. Processes
  alternate between the competitors (round ``r`` runs minicnn, torch, torch-cl, ... rotated
  by ``r``), ``processes`` rounds in all; the harness reports the median over a competitor's
  processes and the ratios of medians: to the best peer (the fastest other library at that
  mode and thread count) and to each peer.
- **epochs** (:func:`bench_epoch`): one process runs ``minicnn train``'s own code path
  (:func:`minicnn.train.fit` with the configuration ``minicnn train --model M --epochs 1``
  builds), another a plain PyTorch script with the same model, weights, recipe, data split,
  per-epoch shuffle and normalisation; each reports the epoch's wall time and the time spent
  in training steps alone.

A child is ``python -m minicnn.bench.process JOB`` (``JOB`` is JSON); it prints one line
``minicnn-bench-result: {...}`` with its timings and the record of where it ran: machine (CPU
model, AVX2/AVX-512 flags), thread counts in effect, library versions, BLAS core kernel
(threadpoolctl's ``architecture``), ``OPENBLAS_*``/``MALLOC_*`` variables, its own GEMM peak.
The child's environment is the harness's, except that ``blas_native`` removes
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (in the child only) so that OpenBLAS picks the
machine's own kernels, and that PyTorch's children get ``MINICNN_ALLOCATOR=system``: they
import minicnn only for the harness, and a PyTorch user's process does not get the allocator
thresholds minicnn sets on import (:mod:`minicnn.allocator`); ``torch-tuned`` and
``torch-compile`` get minicnn's thresholds as ``MALLOC_*`` variables instead (see
:mod:`.peers`, which names every competitor and how it runs). ONNX Runtime's children run
``ort_child.py`` by path and import neither minicnn nor PyTorch. Each child records what was
set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .agreement import BenchError, compare_all
from .peers import BLAS_ENV  # noqa: F401 - re-exported: what --blas-native removes
from .suites import ModelCase
from .timing import summarize

RESULT_MARK = "minicnn-bench-result: "
#: The PyTorch competitors: NCHW (minicnn's layout), channels-last (NHWC), channels-last
#: with minicnn's allocator thresholds, and ``torch.compile`` of that (see :mod:`.peers`).
TORCH_COMPETITORS = ("torch", "torch-cl", "torch-tuned", "torch-compile")
STEP_TIMEOUT_S = 900.0
EPOCH_TIMEOUT_S = 3600.0


# ------------------------------------------------------------------------------------------------
# Parent side: environment, launching
# ------------------------------------------------------------------------------------------------
def child_environment(blas_native: bool, base=None, competitor: str | None = None) -> dict:
    """The environment of a child process: a copy of ``base`` (default ``os.environ``),
    without :data:`BLAS_ENV` when ``blas_native``, and what ``competitor`` needs
    (:func:`.peers.apply_environment`): ``MINICNN_ALLOCATOR=system`` for ``torch`` and
    ``torch-cl`` (see the module docstring), minicnn's glibc thresholds as
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` for ``torch-tuned`` and
    ``torch-compile`` (unless ``base`` sets the allocator itself), nothing for the others.
    ``base`` itself is never changed."""
    from .peers import environment_for

    if competitor is None:
        env = dict(os.environ if base is None else base)
        if blas_native:
            for name in BLAS_ENV:
                env.pop(name, None)
        return env
    return environment_for(competitor, blas_native, base)


def run_child(job: dict, env: dict, timeout: float) -> dict:
    """Run one child process for ``job`` and return the record it printed.

    Raises
    ------
    BenchError
        When the child fails, times out or prints no result (the message has its last
        error line).
    """
    from .peers import ORT_CHILD, competitor

    if competitor(job["competitor"]).library == "onnxruntime":
        # By path and with -P (no script folder on sys.path): the child imports onnxruntime
        # and NumPy only, never the minicnn package.
        command = [sys.executable, "-P", str(ORT_CHILD), json.dumps(job)]
    else:
        command = [sys.executable, "-m", "minicnn.bench.process", json.dumps(job)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"benchmark process {_label(job)} took more than {timeout:.0f} s") \
            from error
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        tail = errors[-1] if errors else f"exit status {done.returncode}, no output"
        raise BenchError(f"benchmark process {_label(job)} failed: {tail}")
    record = json.loads(lines[-1][len(RESULT_MARK):])
    record["process_wall_s"] = wall
    return record


def _label(job: dict) -> str:
    return (f"{job['kind']} {job['competitor']} {job['model']} batch {job['batch']} "
            f"{job['threads']} thread(s)")


def _rotate(items: list, shift: int) -> list:
    shift %= len(items)
    return items[shift:] + items[:shift]


def _round(cases, thread_counts, names, round_index: int):
    """One round of child processes: ``(case, threads, competitor)`` for every case and
    thread count, the competitors in turn and starting one further on each round, so that
    no library always runs first (or right after another)."""
    for case in cases:
        for threads in thread_counts:
            for name in _rotate(list(names), round_index):
                yield case, threads, name


def step_competitors(backends, competitors=None) -> list[str]:
    """The process-mode competitors for ``backends`` and ``--competitors``: the minicnn
    backends asked for (the default backend when none), then ``torch`` and ``torch-cl`` when
    ``torch`` is asked, then the other peers named (:func:`.peers.select`)."""
    from .models import competitors as minicnn_competitors
    from .peers import select

    names = minicnn_competitors(backends)
    minicnn = [n for n in names if n != "torch"]
    return select(minicnn, competitors, torch_asked="torch" in names)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


# ------------------------------------------------------------------------------------------------
# Parent side: model steps
# ------------------------------------------------------------------------------------------------
def _prepare_onnx(cases, names, folder: str, skipped: list, say) -> dict:
    """Export every case's model for the ONNX Runtime competitors in ``names`` (and quantise
    it for ``onnxruntime-int8``) into ``folder``: ``{(case, name): path}``. A case that cannot
    be exported or quantised is skipped for that competitor, with the reason."""
    from .models import make_inputs
    from .peers import export_float, quantize_onnx

    paths = {}
    wanted = [n for n in names if n in ("onnxruntime", "onnxruntime-int8")]
    for index, case in enumerate(cases if wanted else ()):
        _, _, template = make_inputs(case)
        shape = (case.in_channels, case.image_size, case.image_size)
        float_path = os.path.join(folder, f"case{index}-{case.model}.onnx")
        try:
            export_float(template, shape, float_path)
        except Exception as error:  # noqa: BLE001 - any exporter refusal: a skipped row
            for name in wanted:
                skipped.append(_skip(case, name, f"minicnn.onnx.export failed: {error}"))
            continue
        if "onnxruntime" in wanted:
            paths[(case, "onnxruntime")] = float_path
        if "onnxruntime-int8" in wanted:
            int8_path = os.path.join(folder, f"case{index}-{case.model}-int8.onnx")
            start = time.perf_counter()
            try:
                quantize_onnx(float_path, int8_path, shape)
            except Exception as error:  # noqa: BLE001
                skipped.append(_skip(case, "onnxruntime-int8",
                                     f"onnxruntime quantize_static failed: {error}"))
                continue
            say(f"  {case.name}: ONNX Runtime static int8 model quantised in "
                f"{time.perf_counter() - start:.1f} s")
            paths[(case, "onnxruntime-int8")] = int8_path
    return paths


def _skip(case, name: str, reason: str, threads=None, mode=None) -> dict:
    """A skipped-row record: which case and competitor, why (one line)."""
    return {"name": f"{case.name} batch {case.batch}", "model": case.name, "batch": case.batch,
            "backend": name, "threads": threads, "mode": mode,
            "reason": " ".join(str(reason).split())}


def _agreement(cases, names, thread_counts, results) -> dict:
    """Round one's check: every float competitor's eval-mode logits against the first's
    (:func:`~.agreement.compare_all`, an error when they differ); int8 competitors against
    the first float one, recorded (top-1 agreement, largest difference), never an error."""
    from .peers import competitor

    int8 = {}
    for case in cases:
        runs = {name: results.get((case, thread_counts[0], name)) for name in names}
        logits = {name: np.asarray(r[0]["logits"], dtype=np.float32)
                  for name, r in runs.items() if r and r[0].get("logits") is not None}
        floats = {n: {"logits": v} for n, v in logits.items() if not competitor(n).int8}
        compare_all(f"model {case.name} (batch {case.batch}, eval-mode logits, separate "
                    "processes)", floats)
        if not floats:
            continue
        reference = next(iter(floats.values()))["logits"]
        for name, values in logits.items():
            if competitor(name).int8 and values.shape == reference.shape:
                int8[(case, name)] = {
                    "top1_agreement": float(np.mean(values.argmax(1) == reference.argmax(1))),
                    "max_abs_diff": float(np.max(np.abs(values - reference))),
                    "against": next(iter(floats))}
    return int8


def bench_models(cases, backends, thread_counts, processes: int, repeats: int, warmup: int,
                 blas_native: bool = False, log=None, competitors=None, modes=None,
                 calls: int | None = None, compile_backend: str = "inductor") -> dict:
    """Time training steps and inference of every case, each competitor alone in its own
    process, at every thread count.

    Parameters
    ----------
    cases : sequence of ModelCase
    backends : sequence of str
        ``--backends`` (minicnn backends; ``torch`` adds ``torch`` and ``torch-cl``).
    competitors : sequence of str, optional
        ``--competitors``: more peers (:data:`.peers.PEERS`).
    modes : tuple of str, optional
        ``("train", "inference")`` by default; the latency suite asks ``("inference",)``.
        A competitor runs the modes it has (ONNX Runtime and int8: inference only).
    calls : int, optional
        Timed calls at batch 1 (the latency suite's per-call statistics); other batches
        time ``repeats`` calls.
    compile_backend : str
        ``torch.compile``'s backend for ``torch-compile`` (``inductor``; tests use others).

    Returns
    -------
    dict
        ``records`` (one per model, batch, mode, thread count and competitor; ``step`` is the
        summary of the processes' medians, ``processes`` each process's own summary,
        ``p99_ms`` the median of their 99th percentiles, ``peak_rss_kib`` and ``allocator``
        the processes'; ``ratio_to_best_peer`` against the fastest other library that ran),
        ``scaling`` (time at 1 thread / time at N threads), ``runs`` (every child's record of
        where it ran, without its timings), ``peaks`` (the children's GEMM peaks) and
        ``skipped`` (competitors or rows that could not run, with the reason).

    Raises
    ------
    AgreementError
        If a float competitor's logits (eval mode, same weights and batch) differ from the
        first's.
    """
    from .models import MODES
    from .peers import competitor, unavailable

    say = log or (lambda line: None)
    modes = tuple(modes or MODES)
    skipped: list[dict] = []
    names = []
    for name in step_competitors(backends, competitors):
        reason = unavailable(name)
        if reason:
            skipped.append({"name": "models", "backend": name, "reason": reason})
            say(f"  skipping {name}: {reason}")
        elif not set(competitor(name).modes) & set(modes):
            skipped.append({"name": "models", "backend": name,
                            "reason": f"{name} runs {'/'.join(competitor(name).modes)} only"})
        else:
            names.append(name)
    results: dict[tuple, list[dict]] = {}
    failed: set[tuple] = set()
    with tempfile.TemporaryDirectory(prefix="minicnn-bench-onnx-") as folder:
        onnx_paths = _prepare_onnx(cases, names, folder, skipped, say)
        for round_index in range(processes):
            for case, threads, name in _round(cases, thread_counts, names, round_index):
                peer = competitor(name)
                key = (case, threads, name)
                if key in failed or (peer.library == "onnxruntime"
                                     and (case, name) not in onnx_paths):
                    continue
                job = {"kind": "steps", "competitor": name, "model": case.model,
                       "batch": case.batch, "in_channels": case.in_channels,
                       "image_size": case.image_size, "num_classes": case.num_classes,
                       "threads": threads, "warmup": warmup,
                       "repeats": calls if calls and case.batch == 1 else repeats,
                       "modes": [m for m in modes if m in peer.modes],
                       "logits": round_index == 0, "onnx_path": onnx_paths.get((case, name)),
                       "compile_backend": compile_backend}
                record = run_child(job, child_environment(blas_native, competitor=name),
                                   STEP_TIMEOUT_S)
                if record.get("unavailable"):
                    failed.add(key)
                    skipped.append(_skip(case, name, record["unavailable"], threads))
                    say(f"  {case.name} batch {case.batch} {threads} thr {name}: "
                        f"{record['unavailable']}")
                    continue
                results.setdefault(key, []).append(record)
                timed = "  ".join(f"{m} {record['modes'][m]['median_ms']:8.2f} ms"
                                  for m in job["modes"])
                say(f"  process {round_index + 1}/{processes} {case.name:<10} batch "
                    f"{case.batch:<4} {threads} thr {name:<16} {timed}  "
                    f"(pid {record['pid']}, {record['process_wall_s']:.1f} s)")
            if round_index == 0:
                int8_agreement = _agreement(cases, names, thread_counts, results)

    every = [r for runs in results.values() for r in runs]
    core_peak = _median(r["gemm_peak"]["core_gflops"] for r in every if r.get("gemm_peak"))
    peaks = {threads: _median(r["gemm_peak"]["gflops"] for r in every
                              if r.get("gemm_peak") and r["threads_requested"] == threads)
             for threads in thread_counts}
    records = _model_records(cases, names, modes, thread_counts, results, peaks, core_peak,
                             int8_agreement if processes else {})
    runs = [{k: v for k, v in r.items() if k not in ("modes", "logits")} for r in every]
    return {"records": records, "scaling": thread_scaling(records), "runs": runs,
            "skipped": skipped,
            "peaks": {"core_gflops": core_peak,
                      "gflops_by_threads": {str(t): p for t, p in peaks.items()}}}


def _model_records(cases, names, modes, thread_counts, results, peaks, core_peak,
                   int8_agreement) -> list[dict]:
    """One record per case, mode, thread count and competitor that ran (see
    :func:`bench_models`), with every ratio taken of medians at the same thread count."""
    from .models import make_inputs, model_flops
    from .peers import allocator_label, competitor

    records = []
    for case in cases:
        _, _, template = make_inputs(case)
        flops = model_flops(template, case)
        for mode in modes:
            for threads in thread_counts:
                ran = {n: results[(case, threads, n)] for n in names
                       if (case, threads, n) in results
                       and mode in results[(case, threads, n)][0]["modes"]}
                steps = {n: summarize([r["modes"][mode]["median_ms"] / 1e3 for r in runs])
                         for n, runs in ran.items()}
                peer_steps = {n: s.median for n, s in steps.items() if competitor(n).is_peer}
                best = min(peer_steps, key=peer_steps.get) if peer_steps else None
                for name, runs in ran.items():
                    step, peer = steps[name], competitor(name)
                    mode_flops = flops["train" if mode == "train" else "inference"]
                    gflops = mode_flops / step.median / 1e9
                    per_process = [r["modes"][mode] for r in runs]
                    compile_s = [r.get("compile_s", {}).get(mode) for r in runs]
                    records.append({
                        "name": case.name, "batch": case.batch, "mode": mode,
                        "backend": name, "threads": threads, "library": peer.library,
                        "layout": peer.layout, "int8": peer.int8,
                        "step": step.to_dict(), "processes": per_process,
                        "p99_ms": _median(p.get("p99_ms") for p in per_process),
                        "images_per_s": case.batch / step.median,
                        "flops": mode_flops, "gflops": gflops,
                        # The float32 GEMM peak is no ceiling for int8 arithmetic.
                        "fraction_of_peak": (gflops / peaks[threads]
                                             if peaks[threads] and not peer.int8 else None),
                        "fraction_of_core_peak": (gflops / (threads * core_peak)
                                                  if core_peak and not peer.int8 else None),
                        "peak_rss_kib": _median(p.get("peak_rss_kib") for p in per_process),
                        "allocator": allocator_label(runs[0].get("allocator"),
                                                     runs[0].get("environment")),
                        "compile_s": (_median(compile_s)
                                      if any(c is not None for c in compile_s) else None),
                        "int8_agreement": int8_agreement.get((case, name)),
                        "best_peer": best,
                        "ratio_to_best_peer": (step.median / peer_steps[best]
                                               if best else None),
                        "ratios": {p: step.median / m for p, m in peer_steps.items()},
                        "ratio_to_torch": (step.median / steps["torch"].median
                                           if "torch" in steps else None),
                        "ratio_to_torch_cl": (step.median / steps["torch-cl"].median
                                              if "torch-cl" in steps else None),
                    })
    return records


def thread_scaling(records: list[dict]) -> list[dict]:
    """Per model, batch, mode and competitor: time at 1 thread / time at each larger thread
    count (the speed-up the extra threads give; 2.0 would be perfect on 2 cores)."""
    by_key = {(r["name"], r["batch"], r["mode"], r["backend"], r["threads"]): r
              for r in records}
    scaling = []
    for (name, batch, mode, backend, threads), record in by_key.items():
        single = by_key.get((name, batch, mode, backend, 1))
        if threads == 1 or single is None:
            continue
        scaling.append({"name": name, "batch": batch, "mode": mode, "backend": backend,
                        "threads": threads,
                        "time_1_thread_ms": single["step"]["median_ms"],
                        "time_ms": record["step"]["median_ms"],
                        "speedup": single["step"]["median_ms"] / record["step"]["median_ms"]})
    return scaling


# ------------------------------------------------------------------------------------------------
# Parent side: epochs
# ------------------------------------------------------------------------------------------------
def bench_epoch(cases, backends, thread_counts, processes: int, warmup: int,
                dataset: str = "mnist", limit: int | None = None, data_dir: str | None = None,
                blas_native: bool = False, log=None, competitors=None) -> dict:
    """One training epoch per process: ``minicnn train`` against a plain PyTorch script
    (NCHW and channels-last), alternating, ``processes`` of each.

    Returns
    -------
    dict
        ``records`` (one per model, thread count and competitor: ``epoch`` and ``steps``
        summarise the processes' epoch wall times and steps-only times, in ms; ratios are of
        medians), ``runs`` (every child's record of where it ran) and ``skipped`` (the
        ``--competitors`` that have no epoch script: compiled, ONNX Runtime, int8).
    """
    from .peers import allocator_label, competitor, unavailable

    say = log or (lambda line: None)
    names, skipped = [], []
    for name in step_competitors(backends, competitors):
        reason = (unavailable(name) or
                  (None if competitor(name).epoch else "no epoch script for it (the epoch "
                   "suite runs minicnn train, torch, torch-cl and torch-tuned)"))
        if reason:
            skipped.append({"name": "epoch", "backend": name, "reason": reason})
        else:
            names.append(name)
    results: dict[tuple, list[dict]] = {}
    for round_index in range(processes):
        for case, threads, name in _round(cases, thread_counts, names, round_index):
            env = child_environment(blas_native, competitor=name)
            job = {"kind": "epoch", "competitor": name, "model": case.model,
                   "batch": case.batch, "threads": threads, "warmup": warmup,
                   "dataset": dataset, "limit": limit, "data_dir": data_dir}
            record = run_child(job, env, EPOCH_TIMEOUT_S)
            results.setdefault((case, threads, name), []).append(record)
            steps = record["steps_s"]
            say(f"  process {round_index + 1}/{processes} epoch {case.name} "
                f"{threads} thr {name:<9} {record['epoch_s']:8.2f} s epoch, "
                + (f"{steps:8.2f} s in steps" if steps is not None else "steps n/a")
                + f", test accuracy {record['test_accuracy']:.4f}")

    records = []
    for case in cases:
        for threads in thread_counts:
            epochs = {n: summarize([r["epoch_s"] for r in results[(case, threads, n)]])
                      for n in names}
            steps = {}
            for n in names:
                values = [r["steps_s"] for r in results[(case, threads, n)]]
                steps[n] = summarize(values) if None not in values else None
            peer_epochs = {n: e.median for n, e in epochs.items() if competitor(n).is_peer}
            best = min(peer_epochs, key=peer_epochs.get) if peer_epochs else None
            for n in names:
                runs = results[(case, threads, n)]
                epoch, step = epochs[n], steps[n]

                def ratio(other, table):
                    mine, theirs = table.get(n), table.get(other)
                    return mine.median / theirs.median if mine and theirs else None

                records.append({
                    "name": case.name, "batch": case.batch, "threads": threads, "backend": n,
                    "library": competitor(n).library, "layout": competitor(n).layout,
                    "dataset": dataset, "train_images": runs[0]["train_images"],
                    "steps_per_epoch": runs[0]["steps"],
                    "epoch": epoch.to_dict(), "steps": step.to_dict() if step else None,
                    "loop_overhead": (epoch.median / step.median - 1) if step else None,
                    "best_peer": best,
                    "ratio_to_best_peer": epoch.median / peer_epochs[best] if best else None,
                    "ratios": {p: epoch.median / m for p, m in peer_epochs.items()},
                    "ratio_to_torch": ratio("torch", epochs),
                    "ratio_to_torch_cl": ratio("torch-cl", epochs),
                    "steps_ratio_to_torch": ratio("torch", steps),
                    "steps_ratio_to_torch_cl": ratio("torch-cl", steps),
                    "test_accuracy": [r["test_accuracy"] for r in runs],
                    "val_accuracy": [r.get("val_accuracy") for r in runs],
                    "processes": [{k: r.get(k) for k in ("epoch_s", "steps_s", "warmup_s",
                                                         "process_wall_s", "pid",
                                                         "peak_rss_kib")} for r in runs],
                    "peak_rss_kib": _median(r.get("peak_rss_kib") for r in runs),
                    "allocator": allocator_label(runs[0].get("allocator"),
                                                 runs[0].get("environment")),
                })
    every = [r for runs in results.values() for r in runs]
    return {"records": records, "runs": [dict(r) for r in every], "skipped": skipped}


# ------------------------------------------------------------------------------------------------
# Child side
# ------------------------------------------------------------------------------------------------
def _set_threads(threads: int, with_torch: bool) -> None:
    """Import PyTorch first when this process uses it (so that its pool is set too), then
    set Numba's, BLAS's and PyTorch's thread counts together."""
    if with_torch:
        import torch  # noqa: F401
    from ..kernels.threads import set_num_threads

    set_num_threads(threads)


def _where(job: dict, started: float) -> dict:
    """What a child records about itself besides its timings."""
    from .. import allocator
    from . import machine

    return {"kind": job["kind"], "competitor": job["competitor"], "model": job["model"],
            "batch": job["batch"], "threads_requested": job["threads"], "pid": os.getpid(),
            "machine": machine.describe_machine(), "versions": machine.describe_versions(),
            "blas": machine.describe_blas(), "threads": machine.describe_threads(job["threads"]),
            "torch": machine.describe_torch(), "environment": machine.describe_environment(),
            "allocator": allocator.status(),
            "load_average": machine.load_average(),
            "child_wall_s": time.perf_counter() - started}


def _gemm_peaks() -> dict:
    """This process's NumPy GEMM rate at its thread count and at one thread (short runs)."""
    from . import machine

    peak = machine.measure_gemm_peak(repeats=3, warmup=1, with_torch=False)
    core = machine.measure_core_peak(repeats=3, warmup=1)
    return {"gflops": peak["gflops"], "core_gflops": core["gflops"], "size": peak["size"]}


def _peak_rss_kib() -> int:
    """This process's own peak resident set size so far, in KiB (see
    :func:`.ort_child.peak_rss_kib` for why not ``ru_maxrss``)."""
    from .ort_child import peak_rss_kib

    return peak_rss_kib()


class _Int8Model:
    """minicnn's int8 path: :func:`minicnn.quant.quantize` of the float model, calibrated on
    :func:`.peers.calibration_images`; ``model`` is the float network (eval mode)."""

    def __init__(self, case: ModelCase, state: dict, x):
        from .. import models as zoo
        from ..quant import quantize
        from .peers import calibration_images

        self.model = zoo.build(case.model, case.in_channels, case.num_classes,
                               image_size=case.image_size, rng=0)
        self.model.load_state_dict(state)
        self.model.eval()
        shape = (case.in_channels, case.image_size, case.image_size)
        self.quantized = quantize(self.model, calibration_images(shape))
        self.x = x

    def inference(self):
        return self.quantized(self.x)


def _build(name: str, case: ModelCase, x, labels, template, state, compile_backend: str):
    """Competitor ``name`` ready to time (see :mod:`.peers`)."""
    from .models import MinicnnModel, TorchModel
    from .peers import competitor

    peer = competitor(name)
    if name == "minicnn-int8":
        return _Int8Model(case, state, x)
    if peer.library == "torch":
        built = TorchModel(template, x, labels, channels_last=peer.channels_last)
        if peer.compiled:
            import torch

            built.model = torch.compile(built.model, backend=compile_backend)
        return built
    return MinicnnModel(case, name, state, x, labels)


def _function(built, mode: str):
    if mode == "inference":
        built.model.eval()
        return built.inference
    return built.train_step


def child_steps(job: dict) -> dict:
    """Time ``repeats`` calls of each of the job's modes (training steps and/or inference
    batches) of one competitor; inference first, so that its peak resident memory
    (``peak_rss_kib`` after each mode) is not the training's.

    ``torch-compile``: the first call of each mode compiles; it is timed alone
    (``compile_s``) and is not one of the warm-up or timed calls. A competitor that cannot
    run (``torch.compile`` failing, ``minicnn.quant`` missing) returns ``{"unavailable":
    reason}`` and the harness reports a skipped row.
    """
    from .models import MODES, make_inputs
    from .peers import competitor
    from .timing import time_blocks

    started = time.perf_counter()
    name = job["competitor"]
    peer = competitor(name)
    is_torch = peer.library == "torch"
    _set_threads(job["threads"], is_torch)
    case = ModelCase(job["model"], job["batch"], job["in_channels"], job["image_size"],
                     job["num_classes"])
    x, labels, template = make_inputs(case)
    state = template.state_dict()
    modes = sorted(job.get("modes") or MODES, key=lambda m: m != "inference")
    backend = job.get("compile_backend") or "inductor"

    def build():
        return _build(name, case, x, labels, template, state, backend)

    def first_call(function):
        start = time.perf_counter()
        function()
        return time.perf_counter() - start

    result = {"modes": {}, "logits": None, "compile_s": {}}
    try:
        if job.get("logits"):
            competitor_ = build()
            start = time.perf_counter()
            logits = _function(competitor_, "inference")()
            if peer.compiled:
                # The compiled graph is cached by code object, so the timed inference
                # model below reuses it: this call is the inference compilation.
                result["compile_s"]["inference"] = time.perf_counter() - start
            logits = logits.detach().numpy() if is_torch else logits
            result["logits"] = np.asarray(logits, dtype=np.float64).tolist()
            del competitor_
        for mode in modes:
            competitor_ = build()
            function = _function(competitor_, mode)
            if peer.compiled:
                result["compile_s"].setdefault(mode, first_call(function))
            stats = time_blocks({name: function}, job["repeats"], job["warmup"])[name]
            result["modes"][mode] = dict(stats.to_dict(), peak_rss_kib=_peak_rss_kib())
            del competitor_, function
    except ImportError as error:
        if name != "minicnn-int8":
            raise
        return {"unavailable": f"minicnn.quant is not importable ({error})"}
    except Exception as error:  # noqa: BLE001 - torch.compile's failures are many
        # Only the optional paths turn a failure into a skipped row; a float competitor
        # failing is a bug that stops the run.
        if not (peer.compiled or peer.int8):
            raise
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        what = (f"torch.compile ({backend}) failed" if peer.compiled
                else "minicnn.quant.quantize failed")
        return {"unavailable": f"{what}: {type(error).__name__}: "
                               f"{lines[0] if lines else 'no message'}"}
    import resource

    result["peak_rss_kib"] = _peak_rss_kib()
    # Kept for comparison only: includes the harness's peak (see _peak_rss_kib).
    result["ru_maxrss_kib"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    result["gemm_peak"] = _gemm_peaks()
    result.update(_where(job, started))
    return result


def _train_config(job: dict):
    """The :class:`~minicnn.config.TrainConfig` that ``minicnn train --model M --epochs 1
    --batch-size B --dataset D [--limit N] [--data-dir DIR]`` runs (the command's recipe,
    :func:`minicnn.config.recipe_config`); with a limit, the test set is limited to as many
    images (evaluation is not timed)."""
    from ..config import recipe_config

    backend = None if job["competitor"] in TORCH_COMPETITORS else job["competitor"]
    return recipe_config(model=job["model"], dataset=job["dataset"], epochs=1,
                         batch_size=job["batch"], limit=job.get("limit"),
                         test_limit=job.get("limit"), data_dir=job.get("data_dir"),
                         backend=backend)


def _warm_up(job: dict, config, shape, classes: int) -> float:
    """``warmup`` untimed training steps on a throwaway model of the same kind, so that
    neither library's epoch includes one-off start-up (Numba loading its compiled kernels,
    oneDNN creating its primitives). Returns the seconds spent."""
    from .models import MinicnnModel, TorchModel

    if job["warmup"] <= 0:
        return 0.0
    start = time.perf_counter()
    channels, size, _ = shape
    case = ModelCase(config.model, config.batch_size, channels, size, classes)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((config.batch_size, channels, size, size), dtype=np.float32)
    labels = rng.integers(0, classes, config.batch_size)
    from .. import models as zoo

    template = zoo.build(config.model, channels, classes, image_size=size, rng=0)
    if job["competitor"] in TORCH_COMPETITORS:
        competitor = TorchModel(template, x, labels,
                                channels_last=job["competitor"] in ("torch-cl", "torch-tuned"))
    else:
        competitor = MinicnnModel(case, job["competitor"], template.state_dict(), x, labels)
    for _ in range(job["warmup"]):
        competitor.train_step()
    return time.perf_counter() - start


def child_epoch_minicnn(job: dict) -> dict:
    """One epoch of ``minicnn train`` (:func:`minicnn.train.fit`, progress bar on, as the
    command runs it), its steps timed by the loop's own per-step clock."""
    from .. import train

    started = time.perf_counter()
    _set_threads(job["threads"], False)
    config = _train_config(job)
    data = train.load_data(config)
    train_full, train_set = data.train_full, data.train_set
    warmup_s = _warm_up(job, config, train_full.images.shape[1:], len(train_full.classes))

    with tempfile.TemporaryDirectory(prefix="minicnn-bench-epoch-") as out:
        result = train.fit(config, out, progress=True,
                           log=lambda *a: print(*a, file=sys.stderr))
    history = result["history"][-1]
    steps = len(train_set) // config.batch_size
    steps_s = history["step_seconds"]          # the loop's own clock, forward to optimiser step
    out = {"epoch_s": history["seconds"], "steps_s": steps_s, "steps": steps,
           "train_images": len(train_set), "warmup_s": warmup_s,
           "test_accuracy": result["test_accuracy"],
           "val_accuracy": history.get("val_accuracy"), "train_loss": history["train_loss"],
           "recipe": _recipe(config), "peak_rss_kib": _peak_rss_kib()}
    out.update(_where(job, started))
    return out


def _recipe(config) -> dict:
    return {k: getattr(config, k) for k in ("optimizer", "lr", "momentum", "nesterov",
                                            "weight_decay", "schedule", "step_size", "gamma",
                                            "batch_size", "seed", "epochs", "limit",
                                            "val_size")}


def child_epoch_torch(job: dict) -> dict:
    """One epoch of a plain PyTorch training script: the same data split, batches (minicnn's
    own loader: the same order, augmentation and normalisation as ``minicnn train``), model
    and initial weights, optimiser, and learning rate at every step as ``minicnn train``."""
    import torch

    from .. import train
    from ..data import DataLoader, default_transform
    from .models import torch_twin

    started = time.perf_counter()
    _set_threads(job["threads"], True)
    config = _train_config(job)
    data = train.load_data(config)
    train_full, train_set, val_set, test_set = (data.train_full, data.train_set, data.val_set,
                                                data.test_set)
    warmup_s = _warm_up(job, config, train_full.images.shape[1:], len(train_full.classes))
    channels_last = job["competitor"] in ("torch-cl", "torch-tuned")
    meta = train.RunMeta.from_dataset(config, train_full)
    template = train.build_model(config, meta)
    model = torch_twin(template)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    name = config.optimizer.lower()
    if name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov)
    elif name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
    else:
        raise BenchError(f"the PyTorch epoch script has no optimizer {config.optimizer!r}")
    # The learning rate at every step comes from minicnn's own schedule (stepped as ``fit``
    # steps it), so the two runs follow the same recipe whatever the schedule is.
    steps = len(train_set) // config.batch_size                 # the loader drops the rest
    rates = train.make_optimizer(config, template.parameters())
    schedule = train.make_schedule(config, rates, steps)
    per_step = schedule is not None and train.SCHEDULES[config.schedule]
    augment = config.augment if config.augment is not None else train_set.images.shape[1] == 3
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                        transform=default_transform(train_full, augment=augment),
                        rng=np.random.default_rng((config.seed, 0)))
    eval_transform = default_transform(train_full, augment=False)

    def to_torch(x):
        x = torch.from_numpy(x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def batch(images, index):
        return to_torch(eval_transform(images[index].astype(np.float32) / np.float32(255.0),
                                       None))

    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    epoch_start = time.perf_counter()
    steps_s = loss_sum = correct = seen = 0.0
    for images, labels in loader:
        for group in optimizer.param_groups:
            group["lr"] = rates.lr
        x, y = to_torch(images), torch.from_numpy(labels)
        step_start = time.perf_counter()
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps_s += time.perf_counter() - step_start
        if per_step:
            schedule.step()
        loss_sum += loss.item() * len(labels)
        correct += float((logits.argmax(dim=1) == y).sum())
        seen += len(labels)
    epoch_s = time.perf_counter() - epoch_start

    def accuracy(dataset) -> float | None:
        if dataset is None:
            return None
        model.eval()
        hits = 0
        with torch.inference_mode():
            for first in range(0, len(dataset), 256):
                index = np.arange(first, min(first + 256, len(dataset)))
                hits += int((model(batch(dataset.images, index)).argmax(dim=1).numpy()
                             == dataset.labels[index]).sum())
        return hits / len(dataset)

    out = {"epoch_s": epoch_s, "steps_s": steps_s, "steps": steps,
           "train_images": len(train_set), "warmup_s": warmup_s,
           "test_accuracy": accuracy(test_set), "val_accuracy": accuracy(val_set),
           "train_loss": loss_sum / max(seen, 1), "recipe": _recipe(config),
           "peak_rss_kib": _peak_rss_kib()}
    out.update(_where(job, started))
    return out


def child_main(argv: list[str]) -> int:
    """``python -m minicnn.bench.process JOB``: run the job, print one result line."""
    if len(argv) != 1:
        print("usage: python -m minicnn.bench.process JOB_JSON", file=sys.stderr)
        return 2
    job = json.loads(argv[0])
    if job["kind"] == "steps":
        result = child_steps(job)
    elif job["kind"] == "epoch":
        result = (child_epoch_torch if job["competitor"] in TORCH_COMPETITORS
                  else child_epoch_minicnn)(job)
    else:
        print(f"unknown job kind {job['kind']!r}", file=sys.stderr)
        return 2
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
