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


# ---------------------------------------------------------------------------------------------
# Code-writing exercises (the exercise contract shared by the tutorials)
# ---------------------------------------------------------------------------------------------
SOLUTIONS = os.environ.get("MINICNN_TUTORIAL_SOLUTIONS", "") not in ("", "0")
STRICT = os.environ.get("MINICNN_TUTORIAL_STRICT", "") not in ("", "0")


def _solution(tutorial: str, name: str):
    """The function ``name`` from ``tutorials/solutions/<tutorial>.py`` (loaded by path: the
    file name starts with a digit, so it cannot be imported by name)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "solutions" / f"{tutorial}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{tutorial}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def exercise(tutorial: str):
    """Decorator for a learner's stub: returns the stub as written, or with
    ``MINICNN_TUTORIAL_SOLUTIONS=1`` the function of the same name from
    ``tutorials/solutions/<tutorial>.py``. ``tutorial`` is the file stem, e.g.
    ``"02_convolution"`` (explicit, because in a notebook ``__main__`` has no ``__file__``)."""
    def decorate(stub):
        return _solution(tutorial, stub.__name__) if SOLUTIONS else stub
    return decorate


def check_exercise(name: str, learner_fn, check, reference):
    """Run ``check(learner_fn)`` and return the callable the tutorial goes on with.

    - the stub is not filled in yet (``NotImplementedError``): say so and go on with
      ``reference``;
    - the check fails: print its message; re-raise with ``MINICNN_TUTORIAL_SOLUTIONS=1`` or
      ``MINICNN_TUTORIAL_STRICT=1``, else go on with ``reference``;
    - the check passes: say so and return ``learner_fn``.
    """
    try:
        check(learner_fn)
    except NotImplementedError:
        print(f"{name}: not filled in yet -- the tutorial carries on with the library's version")
        return reference
    except AssertionError as error:
        print(f"{name}: not right yet -- {error}")
        if SOLUTIONS or STRICT:
            raise
        print(f"{name}: the tutorial carries on with the library's version")
        return reference
    print(f"{name}: correct!")
    return learner_fn
