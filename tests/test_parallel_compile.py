"""Compiling a plan's kernels in worker processes (minicnn.kernels.parallel_compile): how the
units are shared out, that a worker's compiled code is what this process then runs (loaded from
the cache it hands over, not compiled again), and that a failing worker costs only time."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from minicnn.kernels import parallel_compile as pc

# A module of two cached kernels, as a module handing units to workers provides them.
FIXTURE = '''
import numba
from numba import njit, types

@njit(cache=True)
def twice(x):
    return 2.0 * x

@njit(cache=True)
def square(x):
    return x * x

def canonical_signatures():
    return {"twice": (types.float64,), "square": (types.float64,)}
'''

# Run in a new process with an empty cache: compile both, the second expected on the worker.
DRIVER = '''
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
import compile_fixture as m
from minicnn.kernels import parallel_compile as pc
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pc.compile_units("compile_fixture", m.canonical_signatures(), {"twice": 5.0, "square": 4.0})
sig = (m.numba.types.float64,)
print(json.dumps({
    "results": [m.twice(3.0), m.square(3.0)],
    "hits": {n: f.stats.cache_hits.get(sig, 0) for n, f in (("twice", m.twice), ("square", m.square))},
    "warnings": [str(w.message) for w in caught]}))
'''


def _run_driver(tmp_path, env_extra, pythonpath_has_fixture):
    (tmp_path / "compile_fixture.py").write_text(FIXTURE)
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "tmp").mkdir()
    # TMPDIR: the worker's private cache folder is made there (and must be gone afterwards)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               TMPDIR=str(tmp_path / "tmp"), **env_extra)
    if pythonpath_has_fixture:
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_workers_unit_is_loaded_from_the_cache_it_hands_over(tmp_path):
    report = _run_driver(tmp_path, {pc.WORKERS_VARIABLE: "1"}, pythonpath_has_fixture=True)
    assert report["results"] == [6.0, 9.0]
    # The bigger unit stays here (the worker starts WORKER_START_SECONDS late), the other
    # was compiled by the worker: this process loaded it from the cache, compiled nothing.
    assert report["hits"] == {"twice": 0, "square": 1}
    assert report["warnings"] == []
    assert list((tmp_path / "tmp").iterdir()) == []      # the worker's folder was removed


def test_no_workers_when_told(tmp_path):
    report = _run_driver(tmp_path, {pc.WORKERS_VARIABLE: "0"}, pythonpath_has_fixture=True)
    assert report["results"] == [6.0, 9.0]
    assert report["hits"] == {"twice": 0, "square": 0}


def test_a_failing_worker_costs_only_time(tmp_path):
    # The worker cannot import the module (it is on this process's path only): it fails,
    # and the unit is compiled here, with a warning that says so.
    report = _run_driver(tmp_path, {pc.WORKERS_VARIABLE: "1"}, pythonpath_has_fixture=False)
    assert report["results"] == [6.0, 9.0]
    assert report["hits"] == {"twice": 0, "square": 0}
    assert len(report["warnings"]) == 1
    assert "square" in report["warnings"][0] and "compiled in this one" in report["warnings"][0]
    assert "ModuleNotFoundError" in report["warnings"][0]     # the worker's last error line
    assert list((tmp_path / "tmp").iterdir()) == []


def test_units_are_shared_biggest_first_to_the_least_loaded():
    seconds = {"a": 6.0, "b": 3.5, "c": 2.0, "d": 1.5, "e": 0.5}
    shares = pc._share(dict.fromkeys(seconds), seconds, workers=1, own=0.0)
    # a here (0 < the worker's start); b, c to the worker (4.5, 6.5); d here (7.5);
    # e to the worker (7.0)
    assert shares == [["b", "c", "e"]]
    # This process's own units count: with 6 s of its own, a goes to the worker.
    assert pc._share({"a": None}, seconds, workers=1, own=6.0) == [["a"]]


def test_a_worker_with_too_little_to_do_is_not_started():
    seconds = {"a": 6.0, "b": pc.MIN_WORKER_SECONDS / 2}
    assert pc._share(dict.fromkeys(seconds), seconds, workers=1, own=0.0) == []
    assert pc._share(dict.fromkeys(seconds), seconds, workers=0, own=0.0) == []


@pytest.mark.parametrize("setting, expected", [("0", 0), ("2", 2), (" 1 ", 1)])
def test_worker_count_follows_the_variable(monkeypatch, setting, expected):
    monkeypatch.setenv(pc.WORKERS_VARIABLE, setting)
    assert pc.worker_count() == expected


def test_worker_count_refuses_nonsense(monkeypatch):
    monkeypatch.setenv(pc.WORKERS_VARIABLE, "many")
    with pytest.raises(ValueError, match=pc.WORKERS_VARIABLE):
        pc.worker_count()


def test_worker_count_by_default_leaves_this_process_its_core(monkeypatch):
    monkeypatch.delenv(pc.WORKERS_VARIABLE, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert pc.worker_count() == max(0, min(pc.MAX_WORKERS, cores - 1))


PLAN_DRIVER = textwrap.dedent('''
    import json, numpy as np
    from minicnn import models, inference
    from minicnn.kernels import network
    net = models.build("lenet5", 1, 10, rng=0).eval()
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    planned = inference.forward(net, x)
    layers = net(x)
    sigs = network.canonical_signatures()
    hits = {name: getattr(network, name).stats.cache_hits.get(sig, 0)
            for name, sig in sigs.items()}
    print(json.dumps({"max_difference": float(np.abs(planned - layers).max()),
                      "scale": float(np.abs(layers).max()),
                      "loaded": sorted(name for name, n in hits.items() if n)}))
''')


def test_a_cold_plan_runs_what_its_worker_compiled(tmp_path):
    """LeNet-5's first planned call with an empty cache and one worker: some units arrive
    from the worker (loaded from the cache, which was empty when the process started), and
    the outputs are the layer-by-layer forward's."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               **{pc.WORKERS_VARIABLE: "1"})
    done = subprocess.run([sys.executable, "-c", PLAN_DRIVER], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"], "no unit came from the worker"
    assert report["max_difference"] <= 1e-4 * max(1.0, report["scale"])
