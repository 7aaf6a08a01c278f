"""Small helpers shared by the tutorials: fast mode, saving figures, checking exercises.

This is tutorial plumbing, not part of minicnn. Each tutorial starts with::

    from tutorial_tools import FAST, check, show

- ``FAST`` is True when ``MINICNN_FAST=1`` is set (or ``--fast`` is passed). The test suite runs
  every tutorial that way: less data, fewer epochs, the same code path.
- ``show(fig, "name")`` saves the figure as ``tutorials/output/<tutorial>/name.png`` (or under
  ``$MINICNN_TUTORIAL_OUT``) and, in a notebook, also displays it.
- ``check(what, answer, expected)`` compares an exercise answer with the expected value and
  says whether it is right.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

FAST = os.environ.get("MINICNN_FAST", "") not in ("", "0") or "--fast" in sys.argv

_IN_NOTEBOOK = "ipykernel" in sys.modules


def _tutorial_name() -> str:
    """The running tutorial's file stem, e.g. ``02_convolution`` (``notebook`` if unknown)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else "notebook"


def output_dir() -> Path:
    """Folder the running tutorial saves its figures in (created on first use)."""
    root = os.environ.get("MINICNN_TUTORIAL_OUT")
    base = Path(root) if root else Path(__file__).resolve().parent / "output"
    folder = base / _tutorial_name()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show(fig, name: str) -> Path:
    """Save ``fig`` as ``<output_dir>/<name>.png``; display it when running in a notebook.

    Returns the path written, so a tutorial can print where to find the picture.
    """
    path = output_dir() / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if _IN_NOTEBOOK and matplotlib.get_backend().lower() != "agg":
        import matplotlib.pyplot as plt

        plt.show()
    else:
        import matplotlib.pyplot as plt

        plt.close(fig)
        print(f"[figure saved: {path}]")
    return path


def check(what: str, answer, expected, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Check an exercise answer.

    Numbers and arrays are compared with a tolerance, anything else with ``==``. Prints a
    friendly verdict and raises ``AssertionError`` when the answer is wrong, so a wrong answer
    cannot be missed (and the test suite, which runs the tutorials with the worked answers,
    fails if an answer ever stops being right).
    """
    if answer is None:
        raise AssertionError(f"{what}: no answer yet -- replace the None with your answer")
    try:
        ok = np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                         rtol=rtol, atol=atol) and np.shape(answer) == np.shape(expected)
    except (TypeError, ValueError):
        ok = answer == expected
    if not ok:
        raise AssertionError(f"{what}: not quite -- got {answer!r}, expected {expected!r}")
    print(f"{what}: correct!")
    return True
