"""The benchmark harness: runs the tiny suite, writes every documented field, refuses to time a
wrong kernel, and its command line rejects bad arguments.

Timings themselves are not checked (they depend on the machine); what is checked is that the
harness measures, records and reports what benchmarks/README.md says it does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicnn.bench import AgreementError, main
from minicnn.bench.agreement import compare
from minicnn.bench.suites import SUITES, get_suite
from minicnn.bench.timing import summarize, time_blocks, time_interleaved

ROOT = Path(__file__).resolve().parents[1]
STATS_FIELDS = {"median_ms", "iqr_ms", "q25_ms", "q75_ms", "min_ms", "max_ms", "repeats",
                "samples_ms"}
LAYER_FIELDS = {"name", "kind", "shape", "batch", "backend", "layout", "forward", "backward",
                "total_ms", "flops", "gflops", "gbytes_per_s", "fraction_of_peak",
                "ratio_to_torch"}
MODEL_FIELDS = {"name", "batch", "mode", "backend", "step", "images_per_s", "gflops",
                "fraction_of_peak", "ratio_to_torch"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the tiny suite with every output, shared by the tests that read it."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "tiny.json", "markdown": out / "tiny.md", "plot": out / "tiny.png"}
    status = main(["--suite", "tiny", "--backends", "im2col,numba,torch", "--repeats", "2",
                   "--warmup", "1", "--quiet", "--json", str(paths["json"]),
                   "--markdown", str(paths["markdown"]), "--plot", str(paths["plot"])])
    assert status == 0
    return paths


@pytest.mark.torch
def test_json_has_every_documented_field(tiny_run):
    results = json.loads(tiny_run["json"].read_text())
    for key in ("schema", "config", "machine", "versions", "blas", "threads", "gemm_peak",
                "load_average", "layers", "models", "skipped", "notes"):
        assert key in results, key
    machine = results["machine"]
    assert machine["logical_cores"] == os.cpu_count() and "cpu_model" in machine
    # The flags against /proc/cpuinfo read here, not against the harness's own list of flag
    # names (a set of the record's keys compared with that list was true whatever it held).
    flags = _cpuinfo_flags()
    if flags is None:
        assert machine["cpu_flags"] == {}
    else:
        assert {"fma", "avx2", "avx512f"} <= set(machine["cpu_flags"])
        for flag, present in machine["cpu_flags"].items():
            assert present is (flag in flags), (flag, present)
    assert set(results["versions"]) >= {"python", "numpy", "numba", "torch", "minicnn"}
    assert results["versions"]["numpy"] == np.__version__
    assert results["versions"]["torch"] is not None
    assert set(results["blas"]) >= {"config", "corename", "openblas_coretype_env"}
    assert results["blas"]["openblas_coretype_env"] == os.environ.get("OPENBLAS_CORETYPE")
    threads = results["threads"]
    assert threads["requested"] == 2 and threads["numba_threading_layer"] is not None
    assert set(threads) >= {"numba", "blas", "torch"}
    peak = results["gemm_peak"]
    assert peak["gflops"] == max(peak["start_gflops"], peak["end_gflops"]) > 0

    layers = results["layers"]
    # The tiny suite's cases, written out here (not read back from the suite the harness ran).
    assert {r["name"] for r in layers} == {"conv/tiny.conv", "conv/tiny.grouped-s2",
                                          "maxpool/tiny.pool", "avgpool/tiny.pool",
                                          "linear/tiny.fc"}
    torch_rows = {r["name"]: r for r in layers if r["backend"] == "torch"}
    for record in layers:
        assert LAYER_FIELDS <= set(record), record["name"]
        for direction in ("forward", "backward"):
            _check_stats(record[direction], repeats=2)
        # Derived figures recomputed from the recorded medians and FLOP counts.
        total_s = (record["forward"]["median_ms"] + record["backward"]["median_ms"]) / 1e3
        assert record["total_ms"] == pytest.approx(total_s * 1e3)
        flops = record["flops"]["forward"] + record["flops"]["backward"]
        assert record["gflops"]["total"] == pytest.approx(flops / total_s / 1e9)
        torch_row = torch_rows[record["name"]]
        assert record["ratio_to_torch"]["total"] == pytest.approx(
            record["total_ms"] / torch_row["total_ms"])
        assert record["ratio_to_torch"]["forward"] == pytest.approx(
            record["forward"]["median_ms"] / torch_row["forward"]["median_ms"])
        if record["kind"] in ("conv", "linear"):
            assert record["fraction_of_peak"]["total"] == pytest.approx(
                record["gflops"]["total"] / peak["gflops"])
        else:
            assert record["fraction_of_peak"] is None   # memory-bound: GB/s instead
    # conv 2->4, 3x3, padding 1, 8x8, batch 8: 2*N*Cout*H*W*Cin*k*k forward, twice that back.
    conv = next(r for r in layers if r["name"] == "conv/tiny.conv")
    assert conv["flops"] == {"forward": 2 * 8 * 4 * 8 * 8 * 2 * 9,
                             "backward": 4 * 8 * 4 * 8 * 8 * 2 * 9}
    conv_backends = [r["backend"] for r in layers if r["name"] == "conv/tiny.conv"]
    assert conv_backends == ["im2col", "numba", "torch"]
    pool_backends = [r["backend"] for r in layers if r["name"] == "maxpool/tiny.pool"]
    assert pool_backends == ["im2col", "numba", "torch", "torch-cl"]
    assert [r["backend"] for r in layers if r["kind"] == "linear"] == ["numpy", "torch"]

    models = results["models"]
    assert {(r["mode"], r["backend"]) for r in models} == {
        (mode, b) for mode in ("train", "inference") for b in ("im2col", "numba", "torch")}
    torch_steps = {r["mode"]: r["step"]["median_ms"] for r in models if r["backend"] == "torch"}
    for record in models:
        assert MODEL_FIELDS <= set(record)
        _check_stats(record["step"], repeats=2)
        step_s = record["step"]["median_ms"] / 1e3
        assert record["batch"] == 8
        assert record["images_per_s"] == pytest.approx(8 / step_s)
        assert record["gflops"] == pytest.approx(record["flops"] / step_s / 1e9)
        assert record["ratio_to_torch"] == pytest.approx(
            record["step"]["median_ms"] / torch_steps[record["mode"]])


def _cpuinfo_flags():
    """The CPU flags of the first processor in /proc/cpuinfo, or None off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def _check_stats(stats, repeats):
    """A timing record agrees with its own samples (NumPy's percentiles as the oracle)."""
    assert STATS_FIELDS <= set(stats)
    samples = np.array(stats["samples_ms"])
    assert stats["repeats"] == repeats == len(samples) and (samples > 0).all()
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    assert stats["median_ms"] == pytest.approx(median)
    assert stats["q25_ms"] == pytest.approx(q25) and stats["q75_ms"] == pytest.approx(q75)
    assert stats["iqr_ms"] == pytest.approx(q75 - q25)
    assert stats["min_ms"] == pytest.approx(samples.min())
    assert stats["max_ms"] == pytest.approx(samples.max())


@pytest.mark.torch
def test_markdown_and_png_are_written(tiny_run):
    text = tiny_run["markdown"].read_text()
    assert "| layer | shape | batch | backend | forward ms | backward ms |" in text
    assert "conv/tiny.conv" in text and "torch-cl (NHWC)" in text
    assert "GEMM peak" in text and "Threads" in text and "BLAS" in text
    assert "| model | batch | mode | backend | ms / step | images/s |" in text
    png = tiny_run["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_wrong_kernel_is_caught_before_timing(monkeypatch, tmp_path, capsys):
    from minicnn.kernels import im2col

    original = im2col.conv2d_forward

    def off_by_ten_percent(*args):
        y, ctx = original(*args)
        return y * np.float32(1.1), ctx

    monkeypatch.setattr(im2col, "conv2d_forward", off_by_ten_percent)
    out = tmp_path / "never.json"
    status = main(["--suite", "tiny", "--backends", "numba,im2col", "--repeats", "1",
                   "--warmup", "0", "--quiet", "--json", str(out)])
    assert status == 1
    error = capsys.readouterr().err
    assert "agreement check failed for conv/tiny.conv" in error
    assert "backend 'im2col' output differs from 'numba'" in error
    assert not out.exists()


def test_agreement_names_the_array():
    expected = np.arange(12, dtype=np.float32).reshape(3, 4)
    compare("case", "numba", "im2col", "output", expected + 1e-5, expected)   # round-off: ok
    wrong = expected.copy()
    wrong[1, 2] += 1
    with pytest.raises(AgreementError, match=r"'numba' input grad differs.*index \(1, 2\)"):
        compare("case", "numba", "im2col", "input grad", wrong, expected)
    with pytest.raises(AgreementError, match="shape"):
        compare("case", "numba", "im2col", "output", expected[:2], expected)


def test_statistics_and_interleaving():
    stats = summarize([0.004, 0.001, 0.002, 0.003, 0.100])
    assert stats.median == 0.003 and stats.min == 0.001 and stats.max == 0.100
    assert stats.iqr == pytest.approx(0.002)
    order = []
    result = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                              repeats={"a": 3, "b": 1}, warmup=0)
    assert order == ["a", "b", "a", "a"]       # rounds rotate; b stops after its one repeat
    assert result["a"].repeats == 3 and result["b"].repeats == 1
    order.clear()
    result = time_blocks({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                         repeats=2, warmup=1)
    assert order == ["a", "a", "a", "b", "b", "b"] and result["b"].repeats == 2


def test_suites_cover_the_documented_shapes():
    names = {case.name for case in get_suite("layers").layers}
    assert {"conv/lenet5.conv1", "conv/mnist-cnn.conv2", "conv/cifar.down",
            "conv/separable.depthwise", "maxpool/mnist-cnn.pool1",
            "linear/mnist-cnn.fc1"} <= names
    assert {(m.model, m.batch) for m in get_suite("models").models} == {
        ("lenet5", 64), ("lenet5", 128), ("mnist-cnn", 64), ("mnist-cnn", 128),
        ("resnet20", 64), ("resnet20", 128)}
    # ResNet-20 at CIFAR-10's shape; the MNIST nets at 1x28x28.
    shapes = {m.model: (m.in_channels, m.image_size, m.num_classes)
              for m in get_suite("models").models}
    assert shapes == {"lenet5": (1, 28, 10), "mnist-cnn": (1, 28, 10), "resnet20": (3, 32, 10)}
    # The standard suite keeps its two small networks (its run time is quoted).
    assert {m.model for m in get_suite("standard").models} == {"lenet5", "mnist-cnn"}
    assert get_suite("standard").compile_default and not get_suite("conv").compile_default
    conv = next(c for c in SUITES["conv"].layers if c.name == "conv/mnist-cnn.conv2")
    assert conv.flops() == (2 * 64 * 64 * 14 * 14 * 32 * 9, 4 * 64 * 64 * 14 * 14 * 32 * 9)
    case = get_suite("models").models[0].__class__
    assert get_suite("models").with_batch(32).models == (
        case("lenet5", 32), case("mnist-cnn", 32), case("resnet20", 32, 3, 32, 10))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "minicnn", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_help_and_bad_arguments():
    shown = _cli("bench", "--help")
    assert shown.returncode == 0
    assert "--backends" in shown.stdout and "--suite" in shown.stdout
    for bad in (["--suite", "nope"], ["--backends", "im2col,cuda"], ["--repeats", "0"],
                ["--threads", "-1"], ["--warmup", "x"], ["--compile", "--no-compile"]):
        done = _cli("bench", *bad)
        assert done.returncode == 2, bad
        assert "error" in done.stderr


def test_run_script_wraps_the_same_entry_point():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--backends" in done.stdout


def test_compile_table_shows_each_workload():
    """The compile report has the layers' table, then the plan's where the results have it
    (reports written before the plan workload existed still render)."""
    from minicnn.bench.report import _compile_table

    def side(first):
        return {"import_s": 0.3, "first_call_s": first, "second_call_s": 0.001,
                "process_wall_s": first + 0.6, "cache_files": 7}

    layers = {"what": "layers", "cold": side(13.0), "warm": side(0.25)}
    old = _compile_table(layers)
    assert sum("cold (empty" in line for line in old) == 1
    both = _compile_table(dict(layers, plan={"what": "the plan", "cold": side(8.9),
                                             "warm": side(0.5)}))
    assert sum("cold (empty" in line for line in both) == 2
    assert "What: the plan." in both and "| 8.90 |" in " ".join(both)
