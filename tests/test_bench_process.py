"""The benchmark's separate-process modes: model steps with each library alone in its own
process, the training-epoch comparison against a PyTorch script, thread scaling, the child
environment (``--blas-native``) and the argument checks.

Timings are not judged (they depend on the machine); what is checked is that every figure in
the JSON is what the recorded numbers say it is, and that each child recorded where it ran.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicnn.bench import BenchError, build_parser, main
from minicnn.bench.process import (BLAS_ENV, child_environment, run_child, thread_scaling)

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and not any(
    name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                    "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"))
RUN_FIELDS = {"competitor", "model", "batch", "threads_requested", "pid", "machine",
              "versions", "blas", "threads", "environment", "process_wall_s"}


def _approx(value):
    return pytest.approx(value, rel=1e-9)


# ------------------------------------------------------------------------------------------------
# Model steps, separate processes
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def process_run(tmp_path_factory):
    """LeNet-5 at batch 8, numba against PyTorch (NCHW and channels-last), 2 processes each
    at 1 thread, with --blas-native and the BLAS and allocator variables set in this process."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench-process")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENBLAS_CORETYPE", "Haswell")
        patch.setenv("OPENBLAS_L2_SIZE", "512")
        patch.setenv("MALLOC_ARENA_MAX", "4")
        status = main(["--suite", "models", "--models", "lenet5", "--batch-size", "8",
                       "--backends", "numba,torch", "--repeats", "1", "--warmup", "0",
                       "--processes", "2", "--thread-counts", "1", "--blas-native",
                       "--quiet", "--json", str(out / "models.json"),
                       "--markdown", str(out / "models.md")])
    assert status == 0
    return (json.loads((out / "models.json").read_text()),
            (out / "models.md").read_text())


@pytest.mark.torch
def test_process_mode_records_and_ratios(process_run):
    results, _ = process_run
    config = results["config"]
    assert config["model_runs"] == "process" and config["processes"] == 2
    assert config["thread_counts"] == [1] and config["blas_native"] is True
    records = results["models"]
    assert {(r["mode"], r["backend"]) for r in records} == {
        (mode, b) for mode in ("train", "inference") for b in ("numba", "torch", "torch-cl")}
    by_key = {(r["mode"], r["backend"]): r for r in records}
    core = results["process_peaks"]["core_gflops"]
    assert core > 0
    for record in records:
        assert record["threads"] == 1 and record["batch"] == 8
        per_process = [p["median_ms"] for p in record["processes"]]
        assert len(per_process) == 2
        for stats in record["processes"]:
            assert stats["repeats"] == 1 and stats["samples_ms"] == [stats["median_ms"]]
        # The reported step is the median over the processes' medians ...
        assert record["step"]["samples_ms"] == _approx(per_process)
        assert record["step"]["median_ms"] == _approx(float(np.median(per_process)))
        step_s = record["step"]["median_ms"] / 1e3
        assert record["images_per_s"] == _approx(8 / step_s)
        assert record["gflops"] == _approx(record["flops"] / step_s / 1e9)
        assert record["fraction_of_core_peak"] == _approx(record["gflops"] / (1 * core))
        # ... and every ratio is the quotient of two recorded medians.
        torch_ms = by_key[(record["mode"], "torch")]["step"]["median_ms"]
        cl_ms = by_key[(record["mode"], "torch-cl")]["step"]["median_ms"]
        assert record["ratio_to_torch"] == _approx(record["step"]["median_ms"] / torch_ms)
        assert record["ratio_to_torch_cl"] == _approx(record["step"]["median_ms"] / cl_ms)
        assert record["library"] == ("minicnn" if record["backend"] == "numba" else "torch")
        assert record["layout"] == ("NHWC (channels_last)" if record["backend"] == "torch-cl"
                                    else "NCHW")
    assert results["scaling"] == []          # one thread count: nothing to scale against


@pytest.mark.torch
def test_each_process_records_where_it_ran(process_run):
    results, markdown = process_run
    runs = results["process_runs"]
    assert len(runs) == 3 * 2
    assert sorted(r["competitor"] for r in runs) == sorted(["numba", "torch", "torch-cl"] * 2)
    assert len({r["pid"] for r in runs}) == 6 and os.getpid() not in {r["pid"] for r in runs}
    for run in runs:
        assert RUN_FIELDS <= set(run)
        assert run["machine"]["cpu_model"] == results["machine"]["cpu_model"]
        assert run["machine"]["cpu_flags"] == results["machine"]["cpu_flags"]
        assert run["threads"]["numba"] == 1 and run["threads"]["blas"] == 1
        assert run["versions"]["numpy"] == np.__version__
        assert "corename" in run["blas"]
        # --blas-native: gone in the children, recorded as gone; the allocator setting is
        # recorded, not changed.
        assert run["blas"]["openblas_coretype_env"] is None
        assert not set(BLAS_ENV) & set(run["environment"])
        assert run["environment"].get("MALLOC_ARENA_MAX") == "4"
        if run["competitor"] == "numba":
            assert run["torch"] is None and run["versions"]["torch"] is None
            # minicnn's children keep the allocator thresholds minicnn sets on import ...
            assert run["allocator"]["tuned"] == GLIBC, run["allocator"]
        else:
            assert run["torch"]["threads"] == 1 and run["versions"]["torch"] is not None
            # ... PyTorch's do not: a PyTorch user's process never imports minicnn.
            assert run["allocator"] == {"tuned": False, "reason": "MINICNN_ALLOCATOR=system"}
    # The harness's own process kept its variables.
    assert results["environment"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert results["blas"]["openblas_coretype_env"] == "Haswell"
    assert "each library alone in its own process" in markdown
    assert "native (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed)" in markdown
    assert "MALLOC_ARENA_MAX=4" in markdown
    assert "torch: left alone (MINICNN_ALLOCATOR=system)" in markdown
    if GLIBC:
        assert "numba: M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 128 MiB" in markdown
    assert "| × torch | × torch-cl |" in markdown


def test_blas_native_changes_only_the_child_environment(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "FakeCoreForTest")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "12345")
    monkeypatch.setenv("MALLOC_FAKE_SETTING_FOR_TEST", "7")
    before = dict(os.environ)
    native = child_environment(True)
    assert "OPENBLAS_CORETYPE" not in native and "OPENBLAS_L2_SIZE" not in native
    assert native["MALLOC_FAKE_SETTING_FOR_TEST"] == "7"
    assert native == {k: v for k, v in before.items() if k not in BLAS_ENV}
    inherited = child_environment(False)
    assert inherited == before and inherited is not os.environ
    assert dict(os.environ) == before            # this process is untouched
    base = {"OPENBLAS_CORETYPE": "X", "PATH": "/bin"}
    assert child_environment(True, base) == {"PATH": "/bin"} and "OPENBLAS_CORETYPE" in base
    # PyTorch's children are told to leave the allocator alone; minicnn's are not.
    for competitor in ("torch", "torch-cl"):
        assert child_environment(True, base, competitor) == {"PATH": "/bin",
                                                             "MINICNN_ALLOCATOR": "system"}
    assert child_environment(True, base, "numba") == {"PATH": "/bin"}
    # And a real child sees exactly that environment.
    code = "import os, json; print(json.dumps({k: os.environ.get(k) for k in %r}))" % (
        list(BLAS_ENV) + ["MALLOC_FAKE_SETTING_FOR_TEST"],)
    seen = json.loads(subprocess.run([sys.executable, "-c", code], env=native,
                                     capture_output=True, text=True, check=True).stdout)
    assert seen == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None,
                    "MALLOC_FAKE_SETTING_FOR_TEST": "7"}


def test_thread_scaling_is_the_quotient_of_the_medians():
    def record(backend, threads, ms):
        return {"name": "mnist-cnn", "batch": 64, "mode": "train", "backend": backend,
                "threads": threads, "step": {"median_ms": ms}}
    records = [record("numba", 2, 20.0), record("numba", 1, 30.0), record("torch", 2, 10.0),
               record("torch", 1, 16.0), record("torch-cl", 2, 9.0)]  # no 1-thread torch-cl
    scaling = {r["backend"]: r for r in thread_scaling(records)}
    assert set(scaling) == {"numba", "torch"}
    assert scaling["numba"]["speedup"] == 1.5 and scaling["torch"]["speedup"] == 1.6
    assert scaling["numba"]["time_1_thread_ms"] == 30.0 and scaling["numba"]["threads"] == 2


def test_a_failing_child_is_reported():
    job = {"kind": "steps", "competitor": "numba", "model": "no-such-model", "batch": 2,
           "in_channels": 1, "image_size": 28, "num_classes": 10, "threads": 1,
           "repeats": 1, "warmup": 0, "logits": False}
    with pytest.raises(BenchError, match="steps numba no-such-model.*unknown model"):
        run_child(job, child_environment(False), timeout=120)


# ------------------------------------------------------------------------------------------------
# One epoch: minicnn train against a PyTorch script
# ------------------------------------------------------------------------------------------------
def _real_mnist() -> bool:
    from minicnn.data import load_dataset

    try:
        load_dataset("mnist", "test", limit=1, download=False)
    except Exception:  # noqa: BLE001 - any reason it is not here
        return False
    return True


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory):
    """One process each of minicnn, PyTorch NCHW and channels-last on 300 images (real MNIST
    when it is on this machine, else the synthetic set)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench-epoch")
    dataset = "mnist" if _real_mnist() else "synthetic"
    status = main(["--suite", "epoch", "--dataset", dataset, "--limit", "300",
                   "--processes", "1", "--warmup", "1", "--backends", "numba,torch",
                   "--quiet", "--json", str(out / "epoch.json"),
                   "--markdown", str(out / "epoch.md")])
    assert status == 0
    return json.loads((out / "epoch.json").read_text()), (out / "epoch.md").read_text()


@pytest.mark.torch
def test_epoch_records_and_ratios(epoch_run):
    results, markdown = epoch_run
    assert results["config"]["suite"] == "epoch" and results["config"]["limit"] == 300
    assert results["config"]["child_blas_env"] == "inherited"
    records = {r["backend"]: r for r in results["epochs"]}
    assert set(records) == {"numba", "torch", "torch-cl"}
    # 300 images (no validation hold-out by default), batches of 64, the last one dropped.
    for record in records.values():
        assert record["name"] == "mnist-cnn" and record["batch"] == 64
        assert record["train_images"] == 300 and record["steps_per_epoch"] == 4
        (process,) = record["processes"]
        assert record["epoch"]["median_ms"] == _approx(process["epoch_s"] * 1e3)
        assert record["steps"]["median_ms"] == _approx(process["steps_s"] * 1e3)
        assert 0 < process["steps_s"] <= process["epoch_s"] < process["process_wall_s"]
        assert record["loop_overhead"] == _approx(
            record["epoch"]["median_ms"] / record["steps"]["median_ms"] - 1)
        for other, key in (("torch", "ratio_to_torch"), ("torch-cl", "ratio_to_torch_cl")):
            assert record[key] == _approx(record["epoch"]["median_ms"]
                                          / records[other]["epoch"]["median_ms"])
            assert record["steps_" + key] == _approx(record["steps"]["median_ms"]
                                                     / records[other]["steps"]["median_ms"])
        assert all(0.0 <= a <= 1.0 for a in record["test_accuracy"])
    # The PyTorch script ran minicnn train's recipe, whatever its defaults are.
    runs = {r["competitor"]: r for r in results["process_runs"]}
    recipe = runs["numba"]["recipe"]
    assert runs["torch"]["recipe"] == recipe == runs["torch-cl"]["recipe"]
    assert recipe["epochs"] == 1 and recipe["batch_size"] == 64 and recipe["limit"] == 300
    for run in runs.values():
        assert RUN_FIELDS <= set(run)
        assert run["blas"]["openblas_coretype_env"] == os.environ.get("OPENBLAS_CORETYPE")
    assert "One training epoch" in markdown and "steps-only s" in markdown


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    ["--processes", "0"], ["--thread-counts", "2,x"], ["--thread-counts", "0"],
    ["--thread-counts", "2,,1"], ["--models", "nope"], ["--dataset", "nope"],
    ["--limit", "0"], ["--in-process", "--separate-processes"], ["--suite", "epochs"],
])
def test_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(bad)
    assert stopped.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("contradiction, message", [
    (["--separate-processes", "--no-interleave"], "--no-interleave applies to --in-process"),
    (["--in-process", "--thread-counts", "1,2"], "--thread-counts needs separate processes"),
    (["--models", "resnet-small"], "has no such model case"),
])
def test_contradictory_options_are_refused_before_measuring(contradiction, message, capsys):
    assert main(["--suite", "models", *contradiction]) == 1
    assert message in capsys.readouterr().err


def test_help_describes_the_process_modes():
    text = build_parser().format_help()
    for option in ("--separate-processes", "--in-process", "--processes", "--thread-counts",
                   "--blas-native", "--limit", "epoch"):
        assert option in text, option
    done = subprocess.run([sys.executable, "-m", "minicnn", "bench", "--processes", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "--processes" in done.stderr
