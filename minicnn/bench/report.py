"""Writing results: JSON (everything), a Markdown table (for people) and a chart (PNG).

All three read the same result dictionary built by :func:`minicnn.bench.cli.run`; see
``benchmarks/README.md`` for what every field and column means.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import allocator
from ..serialize import atomic_write, write_text

#: One colour per implementation, the same in every chart.
COLORS = {"reference": "#8c8c8c", "im2col": "#4c72b0", "numba": "#dd8452", "numpy": "#55a868",
          "torch": "#c44e52", "torch-cl": "#8172b3", "torch-tuned": "#937860",
          "torch-compile": "#da8bc3", "onnxruntime": "#8c613c", "onnxruntime-int8": "#ccb974",
          "minicnn-int8": "#64b5cd"}


def write_json(results: dict, path) -> Path:
    """Write ``results`` as indented JSON, atomically (:func:`minicnn.serialize.write_text`)."""
    return write_text(path, json.dumps(results, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------
def _num(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _time(ms: float) -> str:
    """About three significant digits, never in scientific notation."""
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _ms(stats: dict) -> str:
    return f"{_time(stats['median_ms'])} ± {_time(stats['iqr_ms'])}"


def _header(results: dict) -> list[str]:
    machine, versions = results["machine"], results["versions"]
    blas, threads, peak = results["blas"], results["threads"], results["gemm_peak"]
    config = results["config"]
    flags = ", ".join(f for f, present in machine.get("cpu_flags", {}).items() if present)
    torch_peak = (f"; PyTorch on the same product at the start: {_num(peak['torch_gflops'], 1)} GFLOP/s"
                  if peak.get("torch_gflops") else "")
    end_peak = (f"; NumPy {_num(peak['start_gflops'], 1)} GFLOP/s at the start and "
                f"{_num(peak['end_gflops'], 1)} at the end of the run, the higher is the peak"
                if "start_gflops" in peak else "")
    load = results.get("load_average") or {}
    load_text = (f"{load.get('start')} at the start, {load.get('end')} at the end"
                 if load.get("start") else "unknown")
    env = threads.get("environment") or {}
    env_text = ", ".join(f"{k}={v}" for k, v in env.items()) or "none set"
    core = results.get("gemm_core_peak")
    core_text = (f"; single-thread (per core): **{_num(core['gflops'], 1)} GFLOP/s**"
                 if core else "")
    environment = results.get("environment") or {}
    recorded = ", ".join(f"{k}={v}" for k, v in environment.items()
                         if k.startswith(("OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES")))
    lines = [
        f"# minicnn benchmark: suite `{config['suite']}`",
        "",
        f"- **Machine**: {machine.get('cpu_model')}, {machine.get('usable_cores')} usable cores "
        f"({machine.get('physical_cores')} physical), flags: {flags or 'unknown'}; "
        f"{machine.get('platform')}",
        f"- **Versions**: Python {versions['python']}, NumPy {versions['numpy']}, "
        f"Numba {versions['numba']}, PyTorch {versions['torch'] or 'not loaded'}, "
        + (f"ONNX Runtime {versions['onnxruntime']}, onnx {versions.get('onnx')}, "
           if versions.get("onnxruntime") else "")
        + f"minicnn {versions['minicnn']}",
        f"- **BLAS**: {blas.get('config') or 'unknown'}; core kernel **{blas.get('corename')}**; "
        f"OPENBLAS_CORETYPE={blas.get('openblas_coretype_env') or 'unset'}",
        f"- **Threads**: {threads['requested']} requested (Numba {threads['numba']}, BLAS "
        f"{threads['blas']}, PyTorch {threads['torch']}); Numba threading layer "
        f"{threads['numba_threading_layer'] or threads['numba_threading_layer_config']}; "
        f"thread environment: {env_text}",
        f"- **GEMM peak** (NumPy float32 {peak['size']}x{peak['size']} @ "
        f"{peak['size']}x{peak['size']}, median of {peak['repeats']}): "
        f"**{_num(peak['gflops'], 1)} GFLOP/s** at {threads['requested']} thread(s)"
        f"{core_text}{end_peak}{torch_peak}",
        f"- **BLAS and allocator environment** (recorded, not changed): "
        f"{recorded or 'no OPENBLAS_*, MALLOC_* or GLIBC_TUNABLES set'}; glibc allocator "
        f"thresholds in this process: {_allocator_text(results.get('allocator'))}",
        f"- **Load average** (1/5/15 min, all processes): {load_text}",
        (f"- **Timing**: one epoch per process after {config['warmup']} untimed training "
         "steps; `× torch` = time / PyTorch's (NCHW) time in the same run (below 1: faster "
         "than PyTorch)" if config["suite"] == "epoch" else
         f"- **Timing**: median ± inter-quartile range of {config['repeats']} repeats after "
         f"{config['warmup']} warm-up runs, in milliseconds; `× torch` = time / PyTorch's "
         "(NCHW) time in the same run (below 1: faster than PyTorch)"),
    ]
    if config.get("model_runs") == "process":
        lines += _children_header(results)
    return lines


def _children_header(results: dict) -> list[str]:
    """What the child processes recorded about themselves, summarised."""
    config, runs = results["config"], results.get("process_runs") or []
    lines = [f"- **Separate processes**: each competitor alone in its own Python process, "
             f"{config['processes']} per competitor and setting, alternating; thread counts "
             f"{', '.join(map(str, config['thread_counts']))}; BLAS environment of the "
             f"children: **{config['child_blas_env']}**"]
    if not runs:
        return lines
    cores = sorted({str(r["blas"].get("corename")) for r in runs if r.get("blas")})
    coretype = sorted({str(r["blas"].get("openblas_coretype_env") or "unset")
                       for r in runs if r.get("blas")})
    capability = sorted({str((r.get("torch") or {}).get("cpu_capability"))
                         for r in runs if r.get("torch")})
    malloc = sorted({f"{k}={v}" for r in runs for k, v in r["environment"].items()
                     if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))})
    allocator = sorted({f"{r['competitor']}: {_allocator_text(r.get('allocator'))}"
                        for r in runs if r.get("allocator")})
    mismatched = [r for r in runs if ("numba" in r["threads"]
                                      and r["threads"]["numba"] != r["threads_requested"])
                  or (r.get("torch") and r["torch"]["threads"] != r["threads_requested"])]
    lines.append(
        f"- **In the children**: OpenBLAS core kernel {', '.join(cores)} "
        f"(OPENBLAS_CORETYPE {', '.join(coretype)}); PyTorch CPU capability "
        f"{', '.join(capability) or '–'}; MALLOC settings {', '.join(malloc) or 'none'}; "
        f"glibc allocator thresholds {'; '.join(allocator) or 'not recorded'}; "
        + ("thread counts in effect as requested in every process"
           if not mismatched else f"{len(mismatched)} process(es) ran with other thread "
                                  "counts than requested (see process_runs in the JSON)"))
    lines += ["- **Per competitor** (its processes' own records):"]
    lines += [f"  - {line}" for line in _competitor_lines(runs)]
    return lines


def _competitor_lines(runs: list[dict]) -> list[str]:
    """One line per competitor: library versions, BLAS core, allocator, threads in effect."""
    from .peers import allocator_label

    by_name: dict[str, list[dict]] = {}
    for run in runs:
        by_name.setdefault(run["competitor"], []).append(run)
    lines = []
    for name, group in by_name.items():
        first = group[0]
        versions = first.get("versions") or {}
        libraries = ", ".join(f"{k} {versions[k]}" for k in ("minicnn", "numpy", "numba",
                                                            "torch", "onnxruntime")
                              if versions.get(k))
        allocators = sorted({allocator_label(r.get("allocator"), r.get("environment"))
                             for r in group})
        threads = first.get("threads") or {}
        if "onnxruntime_intra_op" in threads:
            thread_text = (f"ONNX Runtime intra-op {threads['onnxruntime_intra_op']}, "
                           f"inter-op {threads['onnxruntime_inter_op']}, "
                           f"{threads['execution_mode']} execution, graph optimisation "
                           f"{threads['graph_optimization_level']}")
            blas = ("imports onnxruntime and NumPy only" if not first.get("imported_minicnn")
                    and not first.get("imported_torch") else "imported minicnn or torch")
        else:
            torch = first.get("torch") or {}
            thread_text = (f"Numba {threads.get('numba')}, BLAS {threads.get('blas')}"
                           + (f", PyTorch {torch.get('threads')} (inter-op "
                              f"{torch.get('interop_threads')}, CPU capability "
                              f"{torch.get('cpu_capability')})" if torch else ""))
            blas = f"BLAS core {(first.get('blas') or {}).get('corename')}"
        requested = sorted({r["threads_requested"] for r in group})
        lines.append(f"`{name}`: {libraries}; {blas}; allocator {', '.join(allocators)}; "
                     f"threads requested {', '.join(map(str, requested))}, in effect (first "
                     f"process) {thread_text}; {len(group)} process(es)")
    return lines


def _allocator_text(status: dict | None) -> str:
    """What :mod:`minicnn.allocator` did in a process, from its recorded ``status()``."""
    return allocator.describe(status) if status else "not recorded"


def _layers_table(records: list[dict]) -> list[str]:
    lines = ["| layer | shape | batch | backend | forward ms | backward ms | GFLOP/s "
             "| % peak | % core peak | GB/s | × torch fwd | × torch bwd | × torch total |",
             "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    previous = None
    for r in records:
        first = r["name"] != previous
        previous = r["name"]
        ratio = r["ratio_to_torch"] or {}
        peak = r["fraction_of_peak"]
        core = r.get("fraction_of_core_peak")
        backend = r["backend"] + (" (NHWC)" if r["backend"] == "torch-cl" else "")
        compute = r["kind"] in ("conv", "linear")
        lines.append(
            f"| {r['name'] if first else ''} | {r['shape'] if first else ''} "
            f"| {r['batch'] if first else ''} | {backend} | {_ms(r['forward'])} "
            f"| {_ms(r['backward'])} | {_num(r['gflops']['total'], 1) if compute else '–'} "
            f"| {_num(peak['total'] * 100, 1, '%') if peak else '–'} "
            f"| {_num(core['total'] * 100, 1, '%') if core else '–'} "
            f"| {_num(r['gbytes_per_s']['total'], 1)} "
            f"| {_num(ratio.get('forward'))} | {_num(ratio.get('backward'))} "
            f"| {_num(ratio.get('total'))} |")
    return lines


def _models_table(records: list[dict]) -> list[str]:
    lines = ["| model | batch | mode | backend | ms / step | images/s | GFLOP/s | % peak "
             "| % core peak | × torch |", "|---|--:|---|---|--:|--:|--:|--:|--:|--:|"]
    previous = None
    for r in records:
        key = (r["name"], r["batch"], r["mode"])
        first = key != previous
        previous = key
        lines.append(
            f"| {r['name'] if first else ''} | {r['batch'] if first else ''} "
            f"| {r['mode'] if first else ''} | {r['backend']} | {_ms(r['step'])} "
            f"| {_num(r['images_per_s'], 0)} | {_num(r['gflops'], 1)} "
            f"| {_num(r['fraction_of_peak'] * 100 if r['fraction_of_peak'] else None, 1, '%')} "
            f"| {_pct(r.get('fraction_of_core_peak'))} | {_num(r['ratio_to_torch'])} |")
    return lines


def _pct(value) -> str:
    return _num(value * 100 if value is not None else None, 1, "%")


def _mib(kib) -> str:
    return "–" if kib is None else f"{kib / 1024:,.0f}"


def _peer_columns(records: list[dict]) -> list[str]:
    """The peers that ran, in :data:`.peers.PEERS` order: one ratio column each."""
    from .peers import PEERS

    ran = {name for r in records for name in (r.get("ratios") or {})}
    ran |= {r["backend"] for r in records if r["backend"] in ("torch", "torch-cl")}
    return [name for name in PEERS if name in ran]


def _best_peer(r: dict) -> str:
    if r.get("ratio_to_best_peer") is None:
        return "–"
    return f"{_num(r['ratio_to_best_peer'])} ({r['best_peer']})"


def _peer_ratio(r: dict, peer: str):
    ratios = r.get("ratios")
    if ratios is None:         # a record from before the peers (torch / torch-cl only)
        return r.get({"torch": "ratio_to_torch", "torch-cl": "ratio_to_torch_cl"}.get(peer, ""))
    return ratios.get(peer)


def _skipped_rows(skipped: list[dict], key: tuple, width: int, leading: int,
                  mode: str | None = None) -> list[str]:
    """Table rows for competitors that could not run at ``key`` (model, batch, threads) and,
    given, ``mode`` (a competitor that never runs that mode gets no row there): ``leading``
    empty cells, the competitor, why, and empty cells up to ``width``."""
    from .peers import competitor

    rows = []
    for s in skipped:
        if mode is not None and mode not in competitor(s["backend"]).modes:
            continue
        if (s.get("model"), s.get("batch"), s.get("threads")) == key:
            rows.append("| " + " | ".join([""] * leading + [s["backend"], f"– ({s['reason']})"]
                                          + [""] * (width - leading - 2)) + " |")
    return rows


def _process_models_table(records: list[dict], skipped: list[dict] | None = None) -> list[str]:
    peers = _peer_columns(records)
    header = ["model", "batch", "mode", "threads", "backend", "ms / step",
              "per-process medians", "images/s", "peak MiB", "allocator", "% peak",
              "% core peak", "× best peer"] + [f"× {p}" for p in peers]
    lines = ["| " + " | ".join(header) + " |",
             "|---|--:|---|--:|---|--:|---|--:|--:|---|--:|--:|--:|" + "--:|" * len(peers)]
    order = sorted(records, key=lambda r: (r["name"], r["batch"], r["mode"] != "train",
                                          -r["threads"]))

    def key_of(r):
        return (r["name"], r["batch"], r["mode"], r["threads"])

    for index, r in enumerate(order):
        key = key_of(r)
        first = index == 0 or key_of(order[index - 1]) != key
        backend = r["backend"] + (" (NHWC)" if "NHWC" in r.get("layout", "") else "")
        medians = ", ".join(_time(p["median_ms"]) for p in r["processes"])
        cells = [r["name"] if first else "", str(r["batch"]) if first else "",
                 r["mode"] if first else "", str(r["threads"]) if first else "", backend,
                 _ms(r["step"]), medians, _num(r["images_per_s"], 0),
                 _mib(r.get("peak_rss_kib")), r.get("allocator") or "–",
                 _pct(r["fraction_of_peak"]), _pct(r.get("fraction_of_core_peak")),
                 _best_peer(r)] + [_num(_peer_ratio(r, p)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
        if index == len(order) - 1 or key_of(order[index + 1]) != key:
            lines += _skipped_rows(skipped or [], (r["name"], r["batch"], r["threads"]),
                                   len(header), 4, r["mode"])
    return lines


def _latency_table(records: list[dict], skipped: list[dict] | None = None) -> list[str]:
    peers = _peer_columns(records)
    header = ["model", "batch", "threads", "backend", "median ms / call", "p99 ms",
              "calls", "images/s", "peak MiB", "allocator", "× best peer"] + \
        [f"× {p}" for p in peers]
    lines = ["| " + " | ".join(header) + " |",
             "|---|--:|--:|---|--:|--:|--:|--:|--:|---|--:|" + "--:|" * len(peers)]
    order = sorted(records, key=lambda r: (r["name"], r["batch"], -r["threads"]))
    for index, r in enumerate(order):
        key = (r["name"], r["batch"], r["threads"])
        first = index == 0 or (order[index - 1]["name"], order[index - 1]["batch"],
                               order[index - 1]["threads"]) != key
        cells = [r["name"] if first else "", str(r["batch"]) if first else "",
                 str(r["threads"]) if first else "", r["backend"],
                 _time(r["step"]["median_ms"]),
                 _time(r["p99_ms"]) if r.get("p99_ms") is not None else "–",
                 str(r["processes"][0]["repeats"]), _num(r["images_per_s"], 0),
                 _mib(r.get("peak_rss_kib")), r.get("allocator") or "–",
                 _best_peer(r)] + [_num(_peer_ratio(r, p)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
        last = index == len(order) - 1 or (order[index + 1]["name"], order[index + 1]["batch"],
                                           order[index + 1]["threads"]) != key
        if last:
            lines += _skipped_rows(skipped or [], key, len(header), 3)
    return lines


def _compile_times(records: list[dict]) -> list[str]:
    rows = [r for r in records if r.get("compile_s") is not None]
    if not rows:
        return []
    lines = ["", "## torch.compile: compilation (not in the timings)", "",
             "The first call of each mode in each `torch-compile` process compiles the graph; "
             "it is timed alone and left out of the warm-up and the timed calls. Median over "
             "the processes (later processes may reuse Inductor's on-disk cache).", "",
             "| model | batch | mode | threads | compile s |", "|---|--:|---|--:|--:|"]
    lines += [f"| {r['name']} | {r['batch']} | {r['mode']} | {r['threads']} "
              f"| {r['compile_s']:.1f} |" for r in rows]
    return lines


def _scaling_table(scaling: list[dict]) -> list[str]:
    lines = ["| model | batch | mode | backend | 1 thread ms | threads | ms | speed-up |",
             "|---|--:|---|---|--:|--:|--:|--:|"]
    for r in sorted(scaling, key=lambda r: (r["name"], r["batch"], r["mode"] != "train")):
        lines.append(f"| {r['name']} | {r['batch']} | {r['mode']} | {r['backend']} "
                     f"| {_time(r['time_1_thread_ms'])} | {r['threads']} "
                     f"| {_time(r['time_ms'])} | {r['speedup']:.2f} |")
    return lines


def _seconds(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{stats['median_ms'] / 1e3:.2f} ± {stats['iqr_ms'] / 1e3:.2f}"


def _epoch_table(records: list[dict]) -> list[str]:
    lines = ["| model | batch | threads | backend | images | steps | epoch s | steps-only s "
             "| loop overhead | peak MiB | allocator | × best peer epoch | × torch epoch "
             "| × torch-cl epoch | × torch steps | × torch-cl steps | test accuracy |",
             "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|---|"]
    for r in records:
        backend = r["backend"] + (" (NHWC)" if "NHWC" in r.get("layout", "") else "")
        accuracy = ", ".join(f"{a:.4f}" for a in r["test_accuracy"] if a is not None)
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['threads']} | {backend} "
            f"| {r['train_images']:,} | {r['steps_per_epoch']} | {_seconds(r['epoch'])} "
            f"| {_seconds(r['steps'])} | {_pct(r['loop_overhead'])} "
            f"| {_mib(r.get('peak_rss_kib'))} | {r.get('allocator') or '–'} | {_best_peer(r)} "
            f"| {_num(r['ratio_to_torch'])} | {_num(r['ratio_to_torch_cl'])} "
            f"| {_num(r['steps_ratio_to_torch'])} | {_num(r['steps_ratio_to_torch_cl'])} "
            f"| {accuracy} |")
    return lines


def _compile_table(compiled: dict) -> list[str]:
    lines = []
    # the layers workload at the top level; the plan's (reports from 2026-12-07 on) below it
    for workload in (compiled, compiled.get("plan")):
        if not workload:
            continue
        lines += ([""] if lines else []) + [
            f"What: {workload['what']}.", "",
            "| start | import s | first call s | second call s | process s | cache files |",
            "|---|--:|--:|--:|--:|--:|"]
        for side, label in (("cold", "cold (empty NUMBA_CACHE_DIR)"),
                            ("warm", "warm (cache filled)")):
            c = workload[side]
            lines.append(f"| {label} | {c['import_s']:.2f} | {c['first_call_s']:.2f} "
                         f"| {c['second_call_s']:.3f} | {c['process_wall_s']:.2f} "
                         f"| {c['cache_files']} |")
    return lines


def markdown(results: dict) -> str:
    """The whole report as Markdown: header (machine, BLAS, threads, peak) and tables."""
    lines = _header(results)
    if results["layers"]:
        lines += ["", "## Layers (forward and backward, float32, NCHW)", "",
                  "Backward computes the input gradient too. GFLOP/s and % of the GEMM peak "
                  "are for forward + backward together and only for convolution and linear "
                  "layers; pooling is memory-bound, compare its GB/s (least possible "
                  "traffic / time).", ""]
        lines += _layers_table(results["layers"])
    separate = results["config"].get("model_runs") == "process"
    if results["models"] and separate:
        lines += ["", "## Models, each library alone in its own process", "",
                  "train = zero_grad + forward + cross-entropy + backward (no input "
                  "gradient) + SGD step; inference = eval-mode forward. Every process builds "
                  "its model, warms up and reports the median of its repeats; `ms / step` is "
                  "the median over the processes ± their inter-quartile range; `× best peer` "
                  "the ratio of that median to the fastest other library's (named) at the "
                  "same mode and thread count, `× PEER` to each peer's; `peak MiB` the "
                  "process's own peak resident memory (Linux VmHWM, as ru_maxrss would be without "
                  "the harness's peak it inherits; inference is measured first, training's "
                  "includes it); `allocator` glibc's malloc settings in that "
                  "process; % core peak = GFLOP/s / (threads × the children's single-thread "
                  "GEMM peak).", ""]
        lines += _process_models_table(results["models"], results.get("skipped"))
        lines += _compile_times(results["models"])
    elif results["models"]:
        lines += ["", "## Models (whole training steps and inference)", "",
                  "train = zero_grad + forward + cross-entropy + backward (no input "
                  "gradient) + SGD step; inference = eval-mode forward. Competitors timed "
                  "in this one process "
                  + ("in turns." if results["config"].get("interleave", True)
                     else "one after the other (--no-interleave)."), ""]
        lines += _models_table(results["models"])
    if results.get("latency"):
        calls = results["config"].get("calls")
        lines += ["", "## Latency: inference call by call, each competitor in its own process",
                  "", f"Eval-mode forward of one batch per call, each call timed alone: "
                  f"{calls} calls per process at batch 1, --repeats at larger batches, after "
                  "the warm-up. `median` and `p99` = the median over the processes of each "
                  "process's median and 99th percentile; images/s = batch / median; `× best "
                  "peer` = median / the fastest other library's median.", ""]
        lines += _latency_table(results["latency"], results.get("skipped"))
        lines += _compile_times(results["latency"])
    if results.get("scaling"):
        lines += ["", "## Thread scaling", "",
                  "speed-up = median step time at 1 thread / at N threads (separate "
                  "processes); N on N cores would ideally give N.", ""]
        lines += _scaling_table(results["scaling"])
    if results.get("epochs"):
        limit = results["config"].get("limit")
        lines += ["", "## One training epoch, each in its own process", "",
                  "minicnn: `minicnn train --model M --epochs 1` (its own code path and "
                  "defaults, progress bar on); PyTorch: a plain script with the same model, "
                  "initial weights, recipe, data split, per-epoch shuffle and normalisation. "
                  "`epoch s` = wall time of the epoch's loop (data, steps, metrics; not the "
                  "validation), `steps-only s` = the time inside training steps (forward to "
                  "optimiser step), `loop overhead` = epoch / steps - 1; median over "
                  "processes ± IQR; each process first ran --warmup untimed steps on a "
                  "throwaway model"
                  + (f"; only the first {limit:,} training images (--limit)" if limit else "")
                  + ".", ""]
        lines += _epoch_table(results["epochs"])
    if results.get("compile"):
        lines += ["", "## Numba compile cost (fresh processes)", ""]
        lines += _compile_table(results["compile"])
    if results.get("skipped"):
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['name']} / {s['backend']}: {s['reason']}" for s in results["skipped"]]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict, path) -> Path:
    return write_text(path, markdown(results))


# ------------------------------------------------------------------------------------------------
# Chart
# ------------------------------------------------------------------------------------------------
#: Legend labels that say the layout or what runs.
LABELS = {"torch": "torch (NCHW)", "torch-cl": "torch-cl (NHWC)", "numpy": "numpy (Linear)"}
#: Legend and bar order.
ORDER = ("reference", "im2col", "numba", "numpy", "torch", "torch-cl")


def _ordered(backends) -> list[str]:
    known = [b for b in ORDER if b in backends]
    return known + [b for b in backends if b not in known]


def _grouped_bars(axis, groups: list[str], series: dict[str, list], title: str,
                  xlabel: str) -> None:
    """Horizontal bars: one group per label (top to bottom), one bar per series, log x,
    each bar labelled with its value."""
    import math

    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = [n for n in _ordered(series) if any(v is not None for v in series[n])]
    height = 0.8 / max(len(names), 1)
    positions = np.arange(len(groups))
    values_all = [v for n in names for v in series[n] if v is not None and v > 0]
    low = 10 ** math.floor(math.log10(min(values_all))) if values_all else 0.1
    high = 10 ** math.ceil(math.log10(max(values_all) * 3)) if values_all else 10
    for index, name in enumerate(names):
        values = [v if v is not None else np.nan for v in series[name]]
        offsets = positions + (index - (len(names) - 1) / 2) * height
        widths = [v - low for v in values]   # bars start at the axis' left edge
        axis.barh(offsets, widths, height, left=low, label=LABELS.get(name, name),
                  color=COLORS.get(name))
        for y, value in zip(offsets, values):
            if not np.isnan(value):
                axis.text(value * 1.08, y, _time(value), va="center", fontsize=6)
    axis.set_xscale("log")
    axis.set_xlim(low, high)
    axis.xaxis.set_major_locator(LogLocator(base=10))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_yticks(positions)
    axis.set_yticklabels(groups, fontsize=8)
    axis.set_ylim(len(groups) - 0.5, -0.5)
    axis.set_xlabel(xlabel)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", which="major", alpha=0.3)


def _series(records, groups, key_of, value_of, backends):
    table = {b: [None] * len(groups) for b in backends}
    index = {g: i for i, g in enumerate(groups)}
    for r in records:
        table[r["backend"]][index[key_of(r)]] = value_of(r)
    return table


def write_plot(results: dict, path) -> Path:
    """A PNG: per layer shape, forward and backward time per backend (log scale); per model,
    ms per training step and per inference batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, models = results["layers"], results["models"] or results.get("latency") or []
    panels = []
    if layers:
        groups = list(dict.fromkeys(f"{r['name']}  [{r['shape']}]" for r in layers))
        backends = _ordered(dict.fromkeys(r["backend"] for r in layers))
        key = lambda r: f"{r['name']}  [{r['shape']}]"  # noqa: E731
        panels.append(("layers", groups, [
            (_series(layers, groups, key, lambda r: r["forward"]["median_ms"], backends),
             "forward", "milliseconds (log)"),
            (_series(layers, groups, key, lambda r: r["backward"]["median_ms"], backends),
             "backward (with input gradient)", "milliseconds (log)")]))
    if models:
        def key(r):
            return f"{r['name']} b{r['batch']}" + (f" {r['threads']}t" if "threads" in r else "")
        groups = list(dict.fromkeys(key(r) for r in models))
        backends = _ordered(dict.fromkeys(r["backend"] for r in models))
        per_mode = []
        for mode, title in (("train", "training step"), ("inference", "inference batch")):
            chosen = [r for r in models if r["mode"] == mode]
            if not chosen:          # the latency suite times inference only
                continue
            per_mode.append((_series(chosen, groups, key, lambda r: r["step"]["median_ms"],
                                     backends), title, "milliseconds (log)"))
        panels.append(("models", groups, per_mode))
    epochs = results.get("epochs") or []
    if epochs:
        def epoch_key(r):
            return f"{r['name']} b{r['batch']} {r['threads']}t epoch"
        groups = list(dict.fromkeys(epoch_key(r) for r in epochs))
        backends = _ordered(dict.fromkeys(r["backend"] for r in epochs))
        panels.append(("epochs", groups, [
            (_series(epochs, groups, epoch_key, lambda r: r["epoch"]["median_ms"] / 1e3,
                     backends), "epoch wall time", "seconds (log)"),
            (_series(epochs, groups, epoch_key,
                     lambda r: r["steps"]["median_ms"] / 1e3 if r["steps"] else None,
                     backends), "time in training steps", "seconds (log)")]))
    if not panels:
        raise ValueError("write_plot: no results to plot")

    heights = [max(2.0, 0.42 * len(groups) + 1.2) for _, groups, _ in panels]
    figure, axes = plt.subplots(len(panels), 2, figsize=(15, sum(heights) + 1.0),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for row, (kind, groups, charts) in enumerate(panels):
        if len(charts) == 1:
            axes[row][1].axis("off")
        for column, (series, title, xlabel) in enumerate(charts):
            axis = axes[row][column]
            prefix = {"layers": "Layer ", "models": "Model "}.get(kind, "")
            _grouped_bars(axis, groups, series, prefix + title, xlabel)
            if column == 1:
                axis.set_yticklabels([])
            if column == len(charts) - 1:
                axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                            title="backend", title_fontsize=8)
    blas, threads = results["blas"], results["threads"]
    config = results["config"]
    figure.suptitle(
        f"minicnn bench '{config['suite']}': {results['machine'].get('cpu_model')}, "
        f"{threads['requested']} threads, BLAS core {blas.get('corename')}, GEMM peak "
        f"{results['gemm_peak']['gflops']:.0f} GFLOP/s; median of {config['repeats']} "
        f"(lower is better)", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.98))

    try:
        return atomic_write(path, lambda handle: figure.savefig(handle, dpi=110, format="png"))
    finally:
        plt.close(figure)
