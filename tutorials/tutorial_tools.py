"""Small helpers shared by the tutorials: fast mode, saving figures, checking exercises.

This is tutorial plumbing, not part of minicnn. Each tutorial starts with::

    from tutorial_tools import FAST, check, show

- ``FAST`` is True when ``MINICNN_FAST=1`` is set (or ``--fast`` is passed). The test suite runs
  every tutorial that way: less data, fewer epochs, the same code path.
- ``show(fig, "name")`` saves the figure as ``tutorials/output/<tutorial>/name.png`` (or under
  ``$MINICNN_TUTORIAL_OUT``) and, in a notebook, also displays it.
- ``check(what, answer, expected)`` compares a short answer (a number, a shape) with the
  expected value and says whether it is right.
- ``@exercise("02_convolution")`` marks a function the learner writes, and
  ``check_exercise(name, fn, check, reference)`` tests it and hands back what the tutorial
  carries on with (the learner's function once it is right, the library's until then).
  ``compare(what, got, expected)`` is the assertion the checks are made of: it names the
  shape or the element that is wrong and the relative error.

Environment variables: ``MINICNN_TUTORIAL_SOLUTIONS=1`` swaps every exercise stub for the
worked solution in ``tutorials/solutions/<tutorial>.py``; ``MINICNN_TUTORIAL_STRICT=1`` makes a
wrong answer stop the tutorial instead of carrying on with the library's version.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

FAST = os.environ.get("MINICNN_FAST", "") not in ("", "0") or "--fast" in sys.argv

_IN_NOTEBOOK = "ipykernel" in sys.modules


SOLUTIONS_DIR = Path(__file__).resolve().parent / "solutions"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _tutorial_name() -> str:
    """The running tutorial's file stem, e.g. ``02_convolution``.

    A notebook's ``__main__`` has no file, so there ``MINICNN_TUTORIAL_NAME`` names it (the test
    suite sets it); otherwise the figures go to ``output/notebook/``.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and not _IN_NOTEBOOK:
        return Path(path).stem
    return os.environ.get("MINICNN_TUTORIAL_NAME") or "notebook"


def output_dir() -> Path:
    """Folder the running tutorial saves its figures in (created on first use)."""
    root = os.environ.get("MINICNN_TUTORIAL_OUT")
    base = Path(root) if root else Path(__file__).resolve().parent / "output"
    folder = base / _tutorial_name()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show(fig, name: str) -> None:
    """Save ``fig`` as ``<output_dir>/<name>.png``; display it when running in a notebook.

    Outside a notebook it prints where the file went. Returns None, so a ``show(...)`` at the
    end of a notebook cell does not echo a path into the cell's output.
    """
    path = output_dir() / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    if _IN_NOTEBOOK:
        # Display the saved PNG: it works with any matplotlib backend (Agg included), and the
        # notebook shows exactly the file on disk. Closing the figure below keeps the inline
        # backend from drawing it a second time at the end of the cell.
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    else:
        print(f"[figure saved: {path}]")
    plt.close(fig)


def check(what: str, answer, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Check an exercise answer.

    Numbers and arrays are compared with a tolerance, anything else with ``==``. Prints a
    friendly verdict and raises ``AssertionError`` when the answer is wrong, so a wrong answer
    cannot be missed (and the test suite, which runs the tutorials with the worked answers,
    fails if an answer ever stops being right). Returns None (nothing echoed in a notebook).
    """
    if answer is None:
        raise AssertionError(f"{what}: no answer yet -- replace the None with your answer")
    if _all_integers(answer) and _all_integers(expected):
        # Counts, sizes and shapes are exact: a tolerance would let 1,572,860 bytes pass.
        if np.shape(answer) != np.shape(expected) or not np.array_equal(answer, expected):
            raise AssertionError(f"{what}: not quite -- got {answer!r}, expected {expected!r}")
        print(f"{what}: correct!")
        return
    try:
        ok = np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                         rtol=rtol, atol=atol) and np.shape(answer) == np.shape(expected)
    except (TypeError, ValueError):
        ok = answer == expected
    if not ok:
        raise AssertionError(f"{what}: not quite -- got {answer!r}, expected {expected!r}")
    print(f"{what}: correct!")


def _all_integers(value) -> bool:
    """True for an int, a NumPy integer, or a (nested) tuple/list/array of them."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, np.ndarray):
        return np.issubdtype(value.dtype, np.integer)
    if isinstance(value, (tuple, list)):
        return len(value) > 0 and all(_all_integers(item) for item in value)
    return False


# --------------------------------------------------------------------------------------------
# Code-writing exercises


def solutions_enabled() -> bool:
    """True when ``MINICNN_TUTORIAL_SOLUTIONS=1``: stubs are replaced by worked solutions."""
    return _flag("MINICNN_TUTORIAL_SOLUTIONS")


@functools.lru_cache(maxsize=None)
def _load_solutions(tutorial: str):
    """Import ``solutions/<tutorial>.py`` from its path (its name starts with a digit)."""
    path = SOLUTIONS_DIR / f"{tutorial}.py"
    if not path.is_file():
        raise FileNotFoundError(f"MINICNN_TUTORIAL_SOLUTIONS=1, but there is no worked solution "
                                f"file for tutorial {tutorial!r} (expected {path})")
    spec = importlib.util.spec_from_file_location(f"tutorial_solutions_{tutorial}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise(tutorial: str):
    """Decorator for a learner's stub.

    Returns the stub as written, unless ``MINICNN_TUTORIAL_SOLUTIONS=1`` is set: then it returns
    the function of the same name from ``tutorials/solutions/<tutorial>.py``. ``tutorial`` is
    the file stem, e.g. ``"02_convolution"`` (passed explicitly because in a notebook
    ``__main__`` has no ``__file__``).
    """
    def decorate(stub):
        if not solutions_enabled():
            return stub
        solutions = _load_solutions(tutorial)
        solution = getattr(solutions, stub.__name__, None)
        if solution is None:
            raise AttributeError(f"solutions/{tutorial}.py defines no {stub.__name__}()")
        return solution
    return decorate


def check_exercise(name: str, learner_fn, check, reference):
    """Test the learner's function and return what the tutorial carries on with.

    Runs ``check(learner_fn)``; ``check`` raises ``AssertionError`` with a precise message
    (which shape, which gradient, relative error, ...) when the answer is wrong.

    - ``learner_fn`` raises ``NotImplementedError`` (the stub as shipped): prints one line
      saying the exercise is not filled in yet and that the tutorial carries on with the
      library's version; returns ``reference``.
    - The check fails: prints the check's message; with ``MINICNN_TUTORIAL_SOLUTIONS=1`` or
      ``MINICNN_TUTORIAL_STRICT=1`` re-raises (so tests catch a wrong solution), otherwise
      returns ``reference`` so the tutorial still runs top to bottom.
    - The check passes: prints a one-line "correct" message; returns ``learner_fn``.

    Always returns a callable; the caller assigns it, so nothing is echoed in a notebook.
    """
    try:
        check(learner_fn)
    except NotImplementedError:
        print(f"[exercise] {name} is not filled in yet -- carrying on with the library's "
              f"version. Write it and run this cell again.")
        return reference
    except AssertionError as wrong:
        print(f"[exercise] {name} is not right yet: {wrong}")
        if solutions_enabled() or _flag("MINICNN_TUTORIAL_STRICT"):
            raise
        print(f"[exercise] carrying on with the library's version of {name}.")
        return reference
    print(f"[exercise] {name}: correct! The rest of the tutorial uses your version.")
    return learner_fn


def compare(what: str, got, expected, rtol: float = 1e-6) -> None:
    """Assert that array ``got`` equals ``expected``, saying precisely what differs.

    Checks, in order: that ``got`` is an array (not None), its shape, that it is finite, and
    the relative error ``max|got - expected| / max|expected|`` against ``rtol``, naming the
    index of the worst element. Raises ``AssertionError``; returns None.
    """
    if got is None:
        raise AssertionError(f"{what}: got None -- did the function forget to return it?")
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {expected.shape}")
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{what}: contains {np.count_nonzero(~np.isfinite(got))} "
                             f"non-finite value(s) (nan or inf)")
    difference = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    error = float(difference.max(initial=0.0)) / scale
    if error > rtol:
        worst = np.unravel_index(int(np.argmax(difference)), difference.shape)
        raise AssertionError(
            f"{what}: relative error {error:.1e} (allowed {rtol:.0e}); worst at index "
            f"{tuple(int(i) for i in worst)}: got {got[worst]:.6g}, expected {expected[worst]:.6g}")
