"""Interchangeable kernel backends for the hot loops (convolution and pooling).

Each backend is a module with the same six pure functions (see :mod:`minicnn.kernels.reference`
for the contract). Layers look a backend up by name::

    from minicnn import kernels
    backend = kernels.get("im2col")
    y, ctx = backend.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)

The process-wide default is what layers use when they are not given a backend; change it with
:func:`set_default_backend` or temporarily with :func:`use_backend`.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

BACKENDS = ("reference", "im2col", "numba")
_MODULES = {"reference": "reference", "im2col": "im2col", "numba": "numba_backend"}

# numba is the fastest correct backend on the machines we measure (benchmarks/RESULTS.md);
# im2col is the fallback if Numba cannot be imported.
_default_backend: str | None = None


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def get(name: str | None = None) -> ModuleType:
    """The backend module called ``name`` (the process-wide default when ``None``)."""
    name = _check_name(name) if name is not None else get_default_backend()
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def get_default_backend() -> str:
    """Name of the backend layers use when none is given."""
    global _default_backend
    if _default_backend is None:
        try:
            get("numba")
            _default_backend = "numba"
        except ImportError:  # pragma: no cover - numba is a hard dependency
            _default_backend = "im2col"
    return _default_backend


def set_default_backend(name: str) -> None:
    """Make ``name`` the backend of every layer that was not given one explicitly."""
    global _default_backend
    _default_backend = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily switch the default backend: ``with use_backend("reference"): ...``."""
    global _default_backend
    previous = get_default_backend()
    set_default_backend(name)
    try:
        yield
    finally:
        _default_backend = previous
