"""Keep freed memory for the next training step (glibc's ``malloc`` thresholds).

Every training step allocates and frees the same large arrays: activations, gradients and
the kernels' scratch buffers. With glibc's defaults, ``free`` gives memory at the top of the
heap back to the kernel once more than a *trim threshold* is free there (a threshold that
follows the sizes allocated lately), and the next step faults it back in, page by page,
each page zeroed by the kernel. Measured on the reference machine: 411 minor page faults
per LeNet-5 training step (batch 64) and 700-1,100 per MNIST CNN step, a quarter of
LeNet-5's step time and about a tenth of the MNIST CNN's, depending on what the process
had allocated before (benchmarks/RESULTS.md).

So on import minicnn raises two of glibc's thresholds with ``mallopt``:

- ``M_MMAP_THRESHOLD`` to 32 MiB (the largest glibc accepts): blocks up to that size come
  from the heap, where freed memory can be reused, instead of fresh ``mmap`` pages;
- ``M_TRIM_THRESHOLD`` to 128 MiB: up to that much free memory stays with the process.

The cost is memory held, not used: a process keeps up to 128 MiB it has freed instead of
returning it to the system. Nothing is changed, and :func:`status` says why, when

- the C library is not glibc (macOS, Windows, musl);
- the environment already sets glibc's allocator (``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``, or a
  ``glibc.malloc.`` tunable in ``GLIBC_TUNABLES``): the user's settings win;
- ``MINICNN_ALLOCATOR=system`` is set (``tuned``, the default, lets minicnn set them).

Settings made with ``mallopt`` last for the life of the process and apply to all of it;
that is why they are made once, at import, and reported by ``minicnn bench``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import warnings

#: The environment variable that chooses: ``tuned`` (default) or ``system``.
ENV_VAR = "MINICNN_ALLOCATOR"
CHOICES = ("tuned", "system")

#: glibc's ``mallopt`` parameters (malloc.h) and the values minicnn sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20

#: Environment variables through which a user sets glibc's allocator themselves.
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                    "MALLOC_MMAP_MAX_")

_status: dict | None = None


def _user_setting(environ) -> str | None:
    """The first allocator setting the environment already makes, or ``None``."""
    for name in GLIBC_MALLOC_ENV:
        if name in environ:
            return name
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES (glibc.malloc.*)"
    return None


def _refusal(environ) -> str | None:
    """Why ``MINICNN_ALLOCATOR`` says to leave the allocator alone, or ``None``."""
    raw = environ.get(ENV_VAR, "tuned")
    value = raw.strip().lower() or "tuned"
    if value == "tuned":
        return None
    if value == "system":
        return f"{ENV_VAR}=system"
    warnings.warn(f"{ENV_VAR}={raw!r} is not one of {', '.join(CHOICES)}; leaving the "
                  "allocator as the system set it", RuntimeWarning, stacklevel=3)
    return f"{ENV_VAR}={raw!r} is not one of {', '.join(CHOICES)}"


def keep_freed_memory(environ=None) -> dict:
    """Set glibc's thresholds as described above, once per process; return :func:`status`.

    Parameters
    ----------
    environ : mapping, optional
        Where to read ``MINICNN_ALLOCATOR`` and the ``MALLOC_*`` settings (default
        ``os.environ``).
    """
    global _status
    if _status is not None:
        return dict(_status)
    environ = os.environ if environ is None else environ
    settings = {"M_MMAP_THRESHOLD": MMAP_THRESHOLD, "M_TRIM_THRESHOLD": TRIM_THRESHOLD}
    user, refusal = _user_setting(environ), _refusal(environ)
    if refusal is not None:
        result = {"tuned": False, "reason": refusal}
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        result = {"tuned": False, "reason": "not glibc"}
    elif user is not None:
        result = {"tuned": False, "reason": f"{user} set in the environment"}
    else:
        result = _mallopt(settings)
    _status = result
    return dict(result)


def _mallopt(settings: dict) -> dict:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as error:
        return {"tuned": False, "reason": f"mallopt not found ({error})"}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    codes = {"M_MMAP_THRESHOLD": M_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": M_TRIM_THRESHOLD}
    refused = [name for name, value in settings.items() if mallopt(codes[name], value) != 1]
    if refused:
        return {"tuned": False, "reason": f"mallopt refused {', '.join(refused)}"}
    return {"tuned": True, "reason": "set by minicnn", "settings": dict(settings)}


def status() -> dict:
    """What :func:`keep_freed_memory` did in this process: ``{"tuned": bool, "reason":
    str}``, plus ``"settings"`` (name -> bytes) when it set them. ``{"tuned": False,
    "reason": "not set yet"}`` before it ran."""
    return dict(_status) if _status is not None else {"tuned": False, "reason": "not set yet"}


def describe(recorded: dict | None = None) -> str:
    """One line for reports: what minicnn did to the allocator, in this process or, given a
    ``recorded`` :func:`status` (a benchmark child's), in that one."""
    current = status() if recorded is None else recorded
    if not current["tuned"]:
        return f"left alone ({current['reason']})"
    parts = ", ".join(f"{name} {value >> 20} MiB" for name, value in current["settings"].items())
    return f"{parts} (set by minicnn)"
