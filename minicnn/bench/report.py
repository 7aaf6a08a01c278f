"""Writing results: JSON (everything), a Markdown table (for people) and a chart (PNG).

All three read the same result dictionary built by :func:`minicnn.bench.cli.run`; see
``benchmarks/README.md`` for what every field and column means.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

#: One colour per implementation, the same in every chart.
COLORS = {"reference": "#8c8c8c", "im2col": "#4c72b0", "numba": "#dd8452", "numpy": "#55a868",
          "torch": "#c44e52", "torch-cl": "#8172b3"}


def _atomic_write(path, write) -> Path:
    """Write through a temporary file in the same folder, then rename (no half files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def write_json(results: dict, path) -> Path:
    """Write ``results`` as indented JSON."""
    def write(name):
        with open(name, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
            handle.write("\n")
    return _atomic_write(path, write)


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
    return [
        f"# minicnn benchmark: suite `{config['suite']}`",
        "",
        f"- **Machine**: {machine.get('cpu_model')}, {machine.get('usable_cores')} usable cores "
        f"({machine.get('physical_cores')} physical), flags: {flags or 'unknown'}; "
        f"{machine.get('platform')}",
        f"- **Versions**: Python {versions['python']}, NumPy {versions['numpy']}, "
        f"Numba {versions['numba']}, PyTorch {versions['torch'] or 'not loaded'}, "
        f"minicnn {versions['minicnn']}",
        f"- **BLAS**: {blas.get('config') or 'unknown'}; core kernel **{blas.get('corename')}**; "
        f"OPENBLAS_CORETYPE={blas.get('openblas_coretype_env') or 'unset'}",
        f"- **Threads**: {threads['requested']} requested (Numba {threads['numba']}, BLAS "
        f"{threads['blas']}, PyTorch {threads['torch']}); Numba threading layer "
        f"{threads['numba_threading_layer'] or threads['numba_threading_layer_config']}; "
        f"thread environment: {env_text}",
        f"- **GEMM peak** (NumPy float32 {peak['size']}x{peak['size']} @ "
        f"{peak['size']}x{peak['size']}, median of {peak['repeats']}): "
        f"**{_num(peak['gflops'], 1)} GFLOP/s**{end_peak}{torch_peak}",
        f"- **Load average** (1/5/15 min, all processes): {load_text}",
        f"- **Timing**: median ± inter-quartile range of {config['repeats']} repeats after "
        f"{config['warmup']} warm-up runs, in milliseconds; `× torch` = time / PyTorch's "
        "(NCHW) time in the same run (below 1: faster than PyTorch)",
    ]


def _layers_table(records: list[dict]) -> list[str]:
    lines = ["| layer | shape | batch | backend | forward ms | backward ms | GFLOP/s "
             "| % peak | GB/s | × torch fwd | × torch bwd | × torch total |",
             "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    previous = None
    for r in records:
        first = r["name"] != previous
        previous = r["name"]
        ratio = r["ratio_to_torch"] or {}
        peak = r["fraction_of_peak"]
        backend = r["backend"] + (" (NHWC)" if r["backend"] == "torch-cl" else "")
        compute = r["kind"] in ("conv", "linear")
        lines.append(
            f"| {r['name'] if first else ''} | {r['shape'] if first else ''} "
            f"| {r['batch'] if first else ''} | {backend} | {_ms(r['forward'])} "
            f"| {_ms(r['backward'])} | {_num(r['gflops']['total'], 1) if compute else '–'} "
            f"| {_num(peak['total'] * 100, 1, '%') if peak else '–'} "
            f"| {_num(r['gbytes_per_s']['total'], 1)} "
            f"| {_num(ratio.get('forward'))} | {_num(ratio.get('backward'))} "
            f"| {_num(ratio.get('total'))} |")
    return lines


def _models_table(records: list[dict]) -> list[str]:
    lines = ["| model | batch | mode | backend | ms / step | images/s | GFLOP/s | % peak "
             "| × torch |", "|---|--:|---|---|--:|--:|--:|--:|--:|"]
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
            f"| {_num(r['ratio_to_torch'])} |")
    return lines


def _compile_table(compiled: dict) -> list[str]:
    lines = [f"What: {compiled['what']}.", "",
             "| start | import s | first call s | second call s | process s | cache files |",
             "|---|--:|--:|--:|--:|--:|"]
    for side, label in (("cold", "cold (empty NUMBA_CACHE_DIR)"), ("warm", "warm (cache filled)")):
        c = compiled[side]
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
    if results["models"]:
        lines += ["", "## Models (whole training steps and inference)", "",
                  "train = zero_grad + forward + cross-entropy + backward (no input "
                  "gradient) + SGD step; inference = eval-mode forward. Competitors timed "
                  + ("in turns." if results["config"].get("interleave", True)
                     else "one after the other (--no-interleave)."), ""]
        lines += _models_table(results["models"])
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
    text = markdown(results)

    def write(name):
        Path(name).write_text(text, encoding="utf-8")
    return _atomic_write(path, write)


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

    layers, models = results["layers"], results["models"]
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
        groups = list(dict.fromkeys(f"{r['name']} b{r['batch']}" for r in models))
        backends = _ordered(dict.fromkeys(r["backend"] for r in models))
        key = lambda r: f"{r['name']} b{r['batch']}"  # noqa: E731
        per_mode = []
        for mode, title in (("train", "training step"), ("inference", "inference batch")):
            chosen = [r for r in models if r["mode"] == mode]
            per_mode.append((_series(chosen, groups, key, lambda r: r["step"]["median_ms"],
                                     backends), title, "milliseconds (log)"))
        panels.append(("models", groups, per_mode))
    if not panels:
        raise ValueError("write_plot: no results to plot")

    heights = [max(2.0, 0.42 * len(groups) + 1.2) for _, groups, _ in panels]
    figure, axes = plt.subplots(len(panels), 2, figsize=(15, sum(heights) + 1.0),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for row, (kind, groups, charts) in enumerate(panels):
        for column, (series, title, xlabel) in enumerate(charts):
            axis = axes[row][column]
            prefix = "Layer " if kind == "layers" else "Model "
            _grouped_bars(axis, groups, series, prefix + title, xlabel)
            if column == 1:
                axis.set_yticklabels([])
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

    def write(name):
        figure.savefig(name, dpi=110, format="png")
    try:
        return _atomic_write(path, write)
    finally:
        plt.close(figure)
