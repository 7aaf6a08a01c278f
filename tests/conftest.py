"""Generic fixtures shared by every test module (keep data-set logic out of here)."""

from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_configure(config):
    """Make ``$MINICNN_DATA_DIR`` absolute, resolved against the folder pytest started in.

    The README's test command sets it relative to the project root
    (``MINICNN_DATA_DIR=../shared/data``), and tests meet it from other places: subprocesses
    with another ``cwd``, symbolic links made in a temporary folder, ``monkeypatch.chdir``.
    Resolving it once, before any test module reads it, keeps every one of them pointing at
    the same folder (the value may list several folders, separated by ``os.pathsep``).
    """
    value = os.environ.get("MINICNN_DATA_DIR")
    if value:
        os.environ["MINICNN_DATA_DIR"] = os.pathsep.join(
            os.path.abspath(os.path.expanduser(part)) if part else part
            for part in value.split(os.pathsep))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test, so every test is repeatable on its own."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="session")
def _check_kernel_argument_types():
    """The parallel kernels are called through compiled entry points without Numba's per-call
    type dispatch (:mod:`minicnn.kernels.parallel`); in the tests, every call checks that its
    arguments still have the types the kernels were compiled for."""
    from minicnn.kernels import parallel

    parallel.CHECK_ARGUMENT_TYPES = True
    yield
    parallel.CHECK_ARGUMENT_TYPES = False


@pytest.fixture(autouse=True)
def _restore_the_default_backend():
    """Tests that run the command line in-process (``minicnn train ... --backend im2col``) set
    the process-wide default backend, as the command should; put it back after each test, so
    a later test that builds layers without a backend gets the usual default and not whatever
    ran before it."""
    from minicnn import kernels

    saved = kernels._default_backend
    yield
    kernels._default_backend = saved
