"""The benchmark's peers (``--competitors``): which run, the environment each child gets, the
ONNX Runtime child, the latency statistics, the ratio to the best peer, the report's columns
and the rows that say why a competitor could not run.

Timings are not judged (they depend on the machine); what is checked is that every figure is
what the recorded numbers say it is. Models are tiny (LeNet-5 at batch 1-2) and each child
times one or two calls.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from minicnn import allocator, models, nn
from minicnn.bench import main
from minicnn.bench import peers
from minicnn.bench.process import _model_records, child_environment, run_child, \
    step_competitors
from minicnn.bench.report import _latency_table, _process_models_table
from minicnn.bench.suites import ModelCase, get_suite
from minicnn.bench.timing import summarize

TUNED = {"MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
         "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD)}


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# Selection
# ------------------------------------------------------------------------------------------------
def test_competitor_names_and_selection():
    assert peers.parse_competitors("all") == ("torch", "torch-cl", "torch-tuned",
                                              "torch-compile", "onnxruntime",
                                              "onnxruntime-int8", "minicnn-int8")
    assert peers.parse_competitors("onnxruntime, torch-tuned,onnxruntime") == (
        "onnxruntime", "torch-tuned")
    for bad in ("torch,,onnxruntime", "tensorflow", "torch,all"):
        with pytest.raises(argparse.ArgumentTypeError):
            peers.parse_competitors(bad)
    # --backends numba,torch alone: what it always meant (torch and torch-cl).
    assert step_competitors(("numba", "torch")) == ["numba", "torch", "torch-cl"]
    assert step_competitors(("numba",)) == ["numba"]
    # --competitors adds peers, in one fixed order whatever order they were named in.
    assert step_competitors(("numba", "torch"), ("onnxruntime", "torch-tuned")) == [
        "numba", "torch", "torch-cl", "torch-tuned", "onnxruntime"]
    assert step_competitors(("im2col", "numba"), ("minicnn-int8", "torch-compile")) == [
        "im2col", "numba", "torch-compile", "minicnn-int8"]
    assert [peers.competitor(n).is_peer for n in ("numba", "minicnn-int8", "torch",
                                                  "onnxruntime")] == [False, False, True, True]
    assert peers.competitor("onnxruntime").modes == ("inference",)
    assert peers.competitor("torch-compile").modes == ("train", "inference")


@pytest.mark.parametrize("argv, message", [
    (["--suite", "tiny", "--competitors", "onnxruntime"], "--competitors applies to"),
    (["--suite", "layers", "--competitors", "torch"], "--competitors applies to"),
    (["--suite", "latency", "--in-process"], "latency suite runs each competitor"),
])
def test_competitors_outside_the_process_suites_are_refused(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_unknown_competitor_exits_2(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--suite", "models", "--competitors", "tensorflow"])
    assert stopped.value.code == 2 and "unknown competitor" in capsys.readouterr().err


def test_latency_suite_cases():
    suite = get_suite("latency")
    assert suite.latency and suite.model_runs == "process"
    assert {(c.model, c.batch) for c in suite.models} == {
        (m, b) for m in ("lenet5", "mnist-cnn", "resnet20") for b in (1, 64)}
    assert {c.model: (c.in_channels, c.image_size) for c in suite.models} == {
        "lenet5": (1, 28), "mnist-cnn": (1, 28), "resnet20": (3, 32)}


# ------------------------------------------------------------------------------------------------
# Environment and allocator
# ------------------------------------------------------------------------------------------------
def test_child_environment_per_competitor():
    base = {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell"}
    for name in ("torch", "torch-cl"):          # PyTorch as shipped: glibc's defaults
        env = child_environment(False, base, name)
        assert env == dict(base, MINICNN_ALLOCATOR="system")
        assert not any(k.startswith("MALLOC_") for k in env)
    for name in ("torch-tuned", "torch-compile"):   # minicnn's thresholds, from allocator.py
        env = child_environment(False, base, name)
        assert env == dict(base, **TUNED), name
        assert int(env["MALLOC_MMAP_THRESHOLD_"]) == 32 << 20
        assert int(env["MALLOC_TRIM_THRESHOLD_"]) == 128 << 20
        assert "MINICNN_ALLOCATOR" not in env
    for name in ("onnxruntime", "onnxruntime-int8", "numba", "minicnn-int8"):
        assert child_environment(False, base, name) == base, name
    # --blas-native still removes the BLAS variables, for every competitor.
    assert child_environment(True, base, "torch-tuned") == dict({"PATH": "/bin"}, **TUNED)
    # A user who sets glibc's allocator keeps it, for minicnn and torch-tuned alike.
    own = dict(base, MALLOC_TRIM_THRESHOLD_="1000")
    assert child_environment(False, own, "torch-tuned") == own
    assert base == {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell"}   # never changed


def test_torch_tuned_child_runs_with_the_tuned_allocator():
    env = child_environment(False, competitor="torch-tuned")
    if peers.user_sets_allocator(env) and env.get("MALLOC_MMAP_THRESHOLD_") != \
            TUNED["MALLOC_MMAP_THRESHOLD_"]:
        pytest.skip("this environment sets glibc's allocator itself")
    code = ("import json, os, minicnn; print(json.dumps([minicnn.allocator.status(), "
            "{k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}]))")
    status, seen = json.loads(subprocess.run([sys.executable, "-c", code], env=env,
                                             capture_output=True, text=True, check=True,
                                             timeout=120).stdout)
    assert seen == TUNED
    assert status["tuned"] is False and "MALLOC_MMAP_THRESHOLD_" in status["reason"]
    assert peers.allocator_label(status, seen) == \
        "tuned mmap 32 MiB trim 128 MiB (MALLOC_* environment)"


def test_allocator_labels():
    tuned = {"tuned": True, "reason": "set by minicnn",
             "settings": {"M_MMAP_THRESHOLD": allocator.MMAP_THRESHOLD,
                          "M_TRIM_THRESHOLD": allocator.TRIM_THRESHOLD}}
    assert peers.allocator_label(tuned, {}) == "tuned mmap 32 MiB trim 128 MiB"
    system = {"tuned": False, "reason": "MINICNN_ALLOCATOR=system"}
    assert peers.allocator_label(system, {}) == "glibc defaults"
    assert peers.allocator_label(None, {"OPENBLAS_CORETYPE": "X"}) == "glibc defaults"
    assert peers.allocator_label(None, {"MALLOC_TRIM_THRESHOLD_": "5"}) == \
        "user settings (MALLOC_TRIM_THRESHOLD_=5)"


# ------------------------------------------------------------------------------------------------
# Skips
# ------------------------------------------------------------------------------------------------
def test_missing_libraries_give_one_line_reasons(monkeypatch):
    monkeypatch.setattr(peers, "_missing", lambda module: module in ("onnxruntime", "torch"))
    assert "onnxruntime not installed" in peers.unavailable("onnxruntime")
    assert "pip install -e '.[bench]'" in peers.unavailable("onnxruntime-int8")
    assert "PyTorch is not installed" in peers.unavailable("torch-compile")
    assert peers.unavailable("numba") is None and peers.unavailable("minicnn-int8") is None
    monkeypatch.setattr(peers, "_missing", lambda module: module == "minicnn.quant")
    assert "minicnn.quant is not importable" in peers.unavailable("minicnn-int8")
    assert peers.unavailable("onnxruntime") is None


@pytest.mark.torch
def test_a_failing_torch_compile_is_a_skipped_row_not_an_error():
    pytest.importorskip("torch")
    job = {"kind": "steps", "competitor": "torch-compile", "model": "lenet5", "batch": 2,
           "in_channels": 1, "image_size": 28, "num_classes": 10, "threads": 1, "repeats": 1,
           "warmup": 0, "modes": ["inference"], "logits": True,
           "compile_backend": "no-such-backend"}
    record = run_child(job, child_environment(False, competitor="torch-compile"), 300)
    assert record["unavailable"].startswith("torch.compile (no-such-backend) failed: ")
    assert "\n" not in record["unavailable"] and "modes" not in record


# ------------------------------------------------------------------------------------------------
# Statistics, ratios, report
# ------------------------------------------------------------------------------------------------
def test_latency_percentiles_on_synthetic_timings():
    stats = summarize([k / 1e3 for k in range(1, 101)])          # 1 .. 100 ms
    assert stats.median == pytest.approx(50.5e-3)
    # 99th percentile, linear between neighbours: index 0.99 * 99 = 98.01 -> 99.01 ms.
    assert stats.p99 == pytest.approx(99.01e-3) and stats.p90 == pytest.approx(90.1e-3)
    assert stats.to_dict()["p99_ms"] == pytest.approx(99.01)
    # A 1.5 % tail of slow calls moves the p99, not the median.
    calls = [1e-3] * 197 + [50e-3] * 3
    tail = summarize(calls)
    assert tail.median == pytest.approx(1e-3) and tail.p99 == pytest.approx(50e-3)
    assert summarize([1e-3] * 200).p99 == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="0-100"):
        stats.percentile(101)


def _process(ms: float, p99: float, peak_kib: int) -> dict:
    return {"median_ms": ms, "p99_ms": p99, "peak_rss_kib": peak_kib, "repeats": 3}


def _run(name: str, modes: dict, allocator_status=None, environment=None, compile_s=None):
    return {"modes": modes, "allocator": allocator_status, "environment": environment or {},
            "compile_s": compile_s or {}}


@pytest.fixture(scope="module")
def synthetic_records():
    """Records built by the harness's own code from made-up process results: numba,
    minicnn-int8, torch (train and inference), onnxruntime (inference only), two processes
    each at one thread."""
    case = ModelCase("lenet5", 2)
    tuned = {"tuned": True, "reason": "set by minicnn",
             "settings": {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 128 << 20}}
    system = {"tuned": False, "reason": "MINICNN_ALLOCATOR=system"}
    both = {"numba": ((4.0, 6.0), (1.0, 3.0)), "torch": ((2.0, 3.0), (1.5, 2.5))}
    results = {}
    for name, (train, inference) in both.items():
        status = tuned if name == "numba" else system
        results[(case, 1, name)] = [
            _run(name, {"train": _process(t, t * 2, 200_000 + 1000 * i),
                        "inference": _process(f, f * 3, 100_000 + 1000 * i)}, status)
            for i, (t, f) in enumerate(zip(train, inference))]
    results[(case, 1, "onnxruntime")] = [
        _run("onnxruntime", {"inference": _process(ms, ms + 1, 60_000)}) for ms in (0.5, 0.7)]
    results[(case, 1, "minicnn-int8")] = [
        _run("minicnn-int8", {"inference": _process(ms, ms, 150_000)}, tuned)
        for ms in (0.4, 0.4)]
    names = ["numba", "torch", "onnxruntime", "minicnn-int8"]
    records = _model_records([case], names, ("train", "inference"), (1,), results,
                             {1: 50.0}, 40.0, {})
    return {(r["mode"], r["backend"]): r for r in records}


def test_best_peer_ratio_and_per_peer_ratios(synthetic_records):
    by = synthetic_records
    assert set(by) == {("train", "numba"), ("train", "torch"), ("inference", "numba"),
                       ("inference", "torch"), ("inference", "onnxruntime"),
                       ("inference", "minicnn-int8")}
    # Medians over processes: numba train 5.0, torch train 2.5; inference numba 2.0,
    # torch 2.0, onnxruntime 0.6, minicnn-int8 0.4.
    train, infer = by[("train", "numba")], by[("inference", "numba")]
    assert train["step"]["median_ms"] == pytest.approx(5.0)
    assert train["best_peer"] == "torch" and train["ratio_to_best_peer"] == pytest.approx(2.0)
    assert infer["best_peer"] == "onnxruntime"
    assert infer["ratio_to_best_peer"] == pytest.approx(2.0 / 0.6)
    assert infer["ratios"] == pytest.approx({"torch": 1.0, "onnxruntime": 2.0 / 0.6})
    assert "minicnn-int8" not in infer["ratios"]          # minicnn is not its own peer
    int8 = by[("inference", "minicnn-int8")]
    assert int8["best_peer"] == "onnxruntime" and int8["ratio_to_best_peer"] == \
        pytest.approx(0.4 / 0.6)
    assert by[("inference", "onnxruntime")]["ratio_to_best_peer"] == pytest.approx(1.0)
    # The latency figures: median of the processes' p99s, images/s from the median.
    assert infer["p99_ms"] == pytest.approx(np.median([3.0, 9.0]))
    assert infer["images_per_s"] == pytest.approx(2 / 2.0e-3)
    # Peak memory and allocator of the processes, per mode.
    assert train["peak_rss_kib"] == pytest.approx(200_500)
    assert infer["peak_rss_kib"] == pytest.approx(100_500)
    assert train["allocator"] == "tuned mmap 32 MiB trim 128 MiB"
    assert by[("train", "torch")]["allocator"] == "glibc defaults"
    assert by[("inference", "onnxruntime")]["allocator"] == "glibc defaults"
    assert by[("inference", "onnxruntime")]["library"] == "onnxruntime"
    assert train["ratio_to_torch"] == pytest.approx(2.0) and train["ratio_to_torch_cl"] is None


def test_report_columns_and_skip_rows(synthetic_records):
    records = list(synthetic_records.values())
    skipped = [{"name": "lenet5 batch 2", "model": "lenet5", "batch": 2, "threads": 1,
                "backend": "torch-compile", "mode": None,
                "reason": "torch.compile (inductor) failed: no C++ compiler"}]
    table = _process_models_table(records, skipped)
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:13] == ["model", "batch", "mode", "threads", "backend", "ms / step",
                           "per-process medians", "images/s", "peak MiB", "allocator",
                           "% peak", "% core peak", "× best peer"]
    assert header[13:] == ["× torch", "× onnxruntime"]     # the peers that ran, PEERS order
    assert all(line.count("|") == table[0].count("|") for line in table)
    numba_train = next(line for line in table if "| numba |" in line and "train" in line)
    assert "2.00 (torch)" in numba_train and "| 196 |" in numba_train   # 200,500 KiB
    skip_rows = [line for line in table if "torch-compile" in line]
    assert len(skip_rows) == 2                          # after the train and inference groups
    assert "– (torch.compile (inductor) failed: no C++ compiler)" in skip_rows[0]
    # An inference-only competitor's skip shows in the inference group only.
    int8_skip = dict(skipped[0], backend="minicnn-int8", reason="no BasicBlock")
    rows = [line for line in _process_models_table(records, [int8_skip])
            if "no BasicBlock" in line]
    assert len(rows) == 1
    # int8 rows have no fraction of the float32 GEMM peak; float rows do.
    int8 = synthetic_records[("inference", "minicnn-int8")]
    assert int8["fraction_of_peak"] is None and int8["fraction_of_core_peak"] is None
    numba = synthetic_records[("train", "numba")]
    assert numba["fraction_of_peak"] == pytest.approx(numba["gflops"] / 50.0)
    assert numba["fraction_of_core_peak"] == pytest.approx(numba["gflops"] / 40.0)
    latency = _latency_table([r for r in records if r["mode"] == "inference"], skipped)
    header = [cell.strip() for cell in latency[0].strip("|").split("|")]
    assert header[:11] == ["model", "batch", "threads", "backend", "median ms / call",
                           "p99 ms", "calls", "images/s", "peak MiB", "allocator",
                           "× best peer"]
    assert all(line.count("|") == latency[0].count("|") for line in latency)
    assert any("3.33 (onnxruntime)" in line and "| numba |" in line for line in latency)
    assert sum("torch-compile" in line for line in latency) == 1


# ------------------------------------------------------------------------------------------------
# ResNet-20 and its PyTorch twin
# ------------------------------------------------------------------------------------------------
def test_resnet20_by_name():
    net = models.build("resnet20", 3, 10, image_size=32, rng=0)
    assert sum(isinstance(m, nn.BasicBlock) for m in net.modules()) == 9
    assert models.count_parameters(net) == 272_474         # He et al.: 0.27 M
    again = models.resnet_small(3, 10, 32, blocks_per_stage=3, rng=0)
    assert all(np.array_equal(a, again.state_dict()[k]) for k, a in net.state_dict().items())


@pytest.mark.torch
def test_torch_twin_of_resnet20_computes_the_same_logits():
    torch = pytest.importorskip("torch")
    from minicnn.bench.models import torch_twin

    net = models.build("resnet20", 3, 10, image_size=32, rng=0)
    twin = torch_twin(net)
    assert set(twin.state_dict()) == set(net.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    for training in (False, True):             # running statistics, then batch statistics
        net.train(training)
        twin.train(training)
        ours = net(x)
        with torch.no_grad():
            theirs = twin(torch.from_numpy(x)).numpy()
        scale = max(1.0, float(np.abs(theirs).max()))
        assert np.abs(ours - theirs).max() <= 1e-4 * scale, training


# ------------------------------------------------------------------------------------------------
# ONNX Runtime
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (_has("onnx") and _has("onnxruntime")), reason="needs onnx and "
                    "onnxruntime (pip install -e '.[bench]')")
def test_onnxruntime_child_matches_minicnn(tmp_path):
    from minicnn.bench.models import make_inputs

    case = ModelCase("lenet5", 2)
    x, _, template = make_inputs(case)
    path = peers.export_float(template, (1, 28, 28), tmp_path / "lenet5.onnx")
    job = {"kind": "steps", "competitor": "onnxruntime", "model": "lenet5", "batch": 2,
           "in_channels": 1, "image_size": 28, "num_classes": 10, "threads": 1, "repeats": 2,
           "warmup": 1, "modes": ["inference"], "logits": True, "onnx_path": str(path)}
    record = run_child(job, child_environment(False, competitor="onnxruntime"), 120)
    template.eval()
    expected = template(x)
    logits = np.asarray(record["logits"], dtype=np.float32)
    assert logits.shape == (2, 10)
    assert np.abs(logits - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))
    # The child imported onnxruntime and NumPy only, and says how it ran.
    assert record["imported_minicnn"] is False and record["imported_torch"] is False
    assert record["threads"]["onnxruntime_intra_op"] == 1
    assert record["threads"]["onnxruntime_inter_op"] == 1
    assert record["threads"]["execution_mode"] == "sequential"
    stats = record["modes"]["inference"]
    assert stats["repeats"] == 2 and stats["p99_ms"] >= stats["median_ms"] > 0
    # Its own peak memory (not the harness's): above the interpreter, far below this process.
    assert 10_000 < stats["peak_rss_kib"] <= record["peak_rss_kib"] < 1_000_000


@pytest.mark.torch
@pytest.mark.skipif(not (_has("onnx") and _has("onnxruntime")), reason="needs onnx and "
                    "onnxruntime (pip install -e '.[bench]')")
def test_latency_suite_end_to_end(tmp_path):
    """numba, torch-tuned, onnxruntime and onnxruntime-int8 at batch 1, one process each."""
    pytest.importorskip("torch")
    status = main(["--suite", "latency", "--models", "lenet5", "--batch-size", "1",
                   "--backends", "numba", "--competitors", "torch-tuned,onnxruntime-int8,"
                   "onnxruntime", "--calls", "5", "--warmup", "1", "--processes", "1",
                   "--thread-counts", "1", "--quiet", "--json", str(tmp_path / "l.json"),
                   "--markdown", str(tmp_path / "l.md")])
    assert status == 0
    results = json.loads((tmp_path / "l.json").read_text())
    markdown = (tmp_path / "l.md").read_text()
    assert results["config"]["competitors"] == ["torch-tuned", "onnxruntime-int8",
                                                "onnxruntime"]
    assert results["config"]["calls"] == 5 and results["models"] == []
    records = {r["backend"]: r for r in results["latency"]}
    assert set(records) == {"numba", "torch-tuned", "onnxruntime", "onnxruntime-int8"}
    peer_ms = {n: r["step"]["median_ms"] for n, r in records.items() if n != "numba"}
    best = min(peer_ms, key=peer_ms.get)
    for name, record in records.items():
        assert record["mode"] == "inference" and record["batch"] == 1
        assert record["processes"][0]["repeats"] == 5
        assert record["p99_ms"] >= record["step"]["median_ms"] > 0
        assert record["peak_rss_kib"] > 0 and record["allocator"]
        assert record["best_peer"] == best
        assert record["ratio_to_best_peer"] == pytest.approx(
            record["step"]["median_ms"] / peer_ms[best])
    assert records["torch-tuned"]["allocator"].startswith("tuned mmap 32 MiB trim 128 MiB")
    assert records["onnxruntime"]["allocator"] == "glibc defaults"
    agreement = records["onnxruntime-int8"]["int8_agreement"]
    assert agreement["against"] == "numba" and 0.0 <= agreement["top1_agreement"] <= 1.0
    assert results["versions"]["onnxruntime"] is not None
    assert "## Latency" in markdown and "| × best peer |" in markdown
    assert "`onnxruntime`:" in markdown and "imports onnxruntime and NumPy only" in markdown
