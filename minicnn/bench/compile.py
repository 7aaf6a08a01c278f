"""What Numba's just-in-time compilation costs a new process, cold and from the disk cache.

Two workloads, each in two fresh interpreters with ``NUMBA_CACHE_DIR`` pointing at a temporary
folder of its own: the first finds it empty and compiles every kernel (cold), the second loads
them from the cache the first wrote (warm). *layers*: one convolution and one max- and one
average-pooling layer forward and backward with the ``numba`` backend (float32). *plan*: the
MNIST CNN's first planned inference calls (:func:`minicnn.inference.forward`), a batch of one
then of four: the whole-network plan's kernels, compiled on several cores where there are
(:mod:`minicnn.kernels.parallel_compile`). Each process reports its import time, its first
call (compile or cache load, plus the work) and a second call (the work alone), and the harness
records the wall time of the whole process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .agreement import BenchError

_LAYERS_SCRIPT = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np
from minicnn import nn
from minicnn.kernels import threads
threads.set_num_threads(int(sys.argv[1]))
imported = time.perf_counter()
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 12, 12), dtype=np.float32)
conv = nn.Conv2d(3, 4, 3, padding=1, backend="numba", rng=0)
pools = (nn.MaxPool2d(2, backend="numba"), nn.AvgPool2d(2, backend="numba"))
def once():
    y = conv(x)
    conv.backward(np.ones_like(y))
    for pool in pools:
        z = pool(y)
        pool.backward(np.ones_like(z))
t0 = time.perf_counter(); once(); t1 = time.perf_counter(); once(); t2 = time.perf_counter()
print(json.dumps({"import_s": imported - start, "first_call_s": t1 - t0,
                  "second_call_s": t2 - t1}))
"""


_PLAN_SCRIPT = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np
from minicnn import inference, models
from minicnn.kernels import threads
threads.set_num_threads(int(sys.argv[1]))
imported = time.perf_counter()
net = models.build("mnist-cnn", 1, 10, rng=0).eval()
x = np.random.default_rng(0).standard_normal((4, 1, 28, 28), dtype=np.float32)
def once():
    inference.forward(net, x[:1])
    inference.forward(net, x)
t0 = time.perf_counter(); once(); t1 = time.perf_counter(); once(); t2 = time.perf_counter()
print(json.dumps({"import_s": imported - start, "first_call_s": t1 - t0,
                  "second_call_s": t2 - t1}))
"""

#: What each workload runs, and its script.
WORKLOADS = {
    "layers": ("new process: import minicnn, then Conv2d 3->4 3x3 + MaxPool2d + AvgPool2d "
               "forward and backward (numba backend, float32, batch 8)", _LAYERS_SCRIPT),
    "plan": ("new process: import minicnn, then the MNIST CNN's planned inference "
             "(minicnn.inference.forward) at batch 1, then batch 4", _PLAN_SCRIPT),
}


def _run(script: str, cache_dir: str, threads: int, timeout: float) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", script, str(threads)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"Numba compile benchmark took more than {timeout:.0f} s") from error
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"Numba compile benchmark subprocess failed: {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["cache_files"] = sum(1 for _ in Path(cache_dir).rglob("*.nbc"))
    return result


def measure_compile(threads: int, timeout: float = 300.0) -> dict:
    """Cold and warm start of the numba backend in fresh processes, for each workload.

    Returns
    -------
    dict
        ``{"what": str, "cold": {...}, "warm": {...}, "plan": {"what", "cold", "warm"}}``:
        the *layers* workload at the top level (as earlier reports have it), the *plan* one
        under ``"plan"``; each side has ``import_s``, ``first_call_s`` (compile or cache load +
        work), ``second_call_s`` (work alone), ``process_wall_s`` (interpreter start to exit)
        and ``cache_files``.
    """
    measured = {}
    for name, (what, script) in WORKLOADS.items():
        with tempfile.TemporaryDirectory(prefix="minicnn-numba-cache-") as cache_dir:
            cold = _run(script, cache_dir, threads, timeout)
            warm = _run(script, cache_dir, threads, timeout)
        measured[name] = {"what": what, "cold": cold, "warm": warm}
    return dict(measured["layers"], plan=measured["plan"])
