"""minicnn.allocator: the glibc thresholds set on import, the cases where they are left
alone, and what they are for: a training step that does not fault its memory back in."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from minicnn import allocator

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")


def _clean_environment(**extra) -> dict:
    """This process's environment without any allocator setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in USER_SETTINGS and k not in ("GLIBC_TUNABLES", allocator.ENV_VAR)}
    env.update(extra)
    return env


def _run(code: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=_clean_environment(**extra),
                          capture_output=True, text=True, timeout=600, check=True)


STATUS = "import json, minicnn; print(json.dumps(minicnn.allocator.status()))"


@needs_glibc
def test_import_sets_both_thresholds():
    status = json.loads(_run(STATUS).stdout)
    assert status == {"tuned": True, "reason": "set by minicnn",
                      "settings": {"M_MMAP_THRESHOLD": 32 << 20,
                                   "M_TRIM_THRESHOLD": 128 << 20}}
    assert "set by minicnn" in json.loads(_run(
        "import json, minicnn; print(json.dumps(minicnn.allocator.describe()))").stdout)


@pytest.mark.parametrize("setting, reason", [
    ({"MINICNN_ALLOCATOR": "system"}, "MINICNN_ALLOCATOR=system"),
    ({"MINICNN_ALLOCATOR": " System "}, "MINICNN_ALLOCATOR=system"),
    ({"MALLOC_TRIM_THRESHOLD_": "1048576"}, "MALLOC_TRIM_THRESHOLD_ set in the environment"),
    ({"MALLOC_TOP_PAD_": "0"}, "MALLOC_TOP_PAD_ set in the environment"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"},
     "GLIBC_TUNABLES (glibc.malloc.*) set in the environment"),
], ids=["opt-out", "opt-out-spelling", "trim", "top-pad", "tunables"])
def test_the_users_choice_wins(setting, reason):
    status = json.loads(_run(STATUS, **setting).stdout)
    if not GLIBC and "MINICNN_ALLOCATOR" not in setting:
        reason = "not glibc"
    assert status == {"tuned": False, "reason": reason}


def test_an_unknown_choice_warns_and_changes_nothing():
    done = _run(STATUS, MINICNN_ALLOCATOR="fast")
    assert json.loads(done.stdout) == {
        "tuned": False, "reason": "MINICNN_ALLOCATOR='fast' is not one of tuned, system"}
    assert "RuntimeWarning: MINICNN_ALLOCATOR='fast' is not one of tuned, system" in done.stderr


def test_other_glibc_tunables_and_malloc_variables_do_not_count():
    # Not thresholds: the arena count, or a tunable of another subsystem.
    assert allocator._user_setting({"MALLOC_ARENA_MAX": "4"}) is None
    assert allocator._user_setting({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}) is None
    assert allocator._user_setting({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1:x=2"})


def test_it_runs_once_per_process():
    first = allocator.status()
    assert allocator.keep_freed_memory({"MINICNN_ALLOCATOR": "system"}) == first
    assert allocator.status() == first


FAULTS = """
import resource, numpy as np, minicnn
from minicnn import models, nn, optim
rng = np.random.default_rng(0)
model = models.lenet5(backend="numba", rng=0)
opt, loss = optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss()
x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
labels = rng.integers(0, 10, 64)
def step():
    opt.zero_grad()
    loss(model(x), labels)
    model.backward(loss.backward(), need_input_grad=False)
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@needs_glibc
def test_a_training_step_keeps_its_memory():
    """With glibc's defaults this script faults about 250 pages back in per LeNet-5 step
    (``MINICNN_ALLOCATOR=system``; 411 in the benchmark's child, a quarter of the step's
    time); with the thresholds, 0-10."""
    faults = float(_run(FAULTS).stdout)
    assert faults < 64, f"{faults:.0f} minor page faults per training step"
