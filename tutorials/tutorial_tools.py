"""Small helpers shared by the tutorials: fast mode, saving figures, checking exercises.

This is tutorial plumbing, not part of minicnn. Each tutorial starts with::

    from tutorial_tools import FAST, check, show

- ``FAST`` is True when ``MINICNN_FAST=1`` is set (or ``--fast`` is passed). The test suite runs
  every tutorial that way: less data, fewer epochs, the same code path.
- ``loop_length(full, fast)`` is how long a training loop (steps, epochs, repetitions) runs:
  ``fast`` in fast mode, ``full`` otherwise. With ``MINICNN_TUTORIAL_SHORT_LOOPS=1`` (the test
  suite's full-mode test) the data and models keep their full size but the loops run at their
  fast-mode length, so the full-size code paths run in seconds; ``SHORT_LOOPS`` says so, and
  ``claim(holds, what)`` asserts a claim that needs the full-length training everywhere
  except there (where it prints the claim and whether this short run shows it instead).
- ``show(fig, "name")`` saves the figure as ``tutorials/output/<tutorial>/name.png`` (or under
  ``$MINICNN_TUTORIAL_OUT``) and, in a notebook, also displays it.
- ``check(what, answer, expected)`` compares a short answer (a number, a shape) with the
  expected value and says whether it is right (a wrong answer is a message, not a stop).
- ``@exercise("02_convolution")`` marks a function the learner writes, and
  ``check_exercise(name, fn, check, reference)`` tests it and hands back what the tutorial
  carries on with (the learner's function once it is right, the library's until then).
  ``compare(what, got, expected)`` is the assertion the checks are made of: it names the
  shape or the element that is wrong and the relative error.

Environment variables: ``MINICNN_TUTORIAL_SOLUTIONS=1`` swaps every exercise stub for the
worked solution in ``tutorials/solutions/<tutorial>.py``; ``MINICNN_TUTORIAL_STRICT=1`` makes a
wrong answer stop the tutorial instead of carrying on with the library's version (and a wrong
short answer to ``check`` raise ``AssertionError``, as it also does with the solutions).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path

import numpy as np

FAST = os.environ.get("MINICNN_FAST", "") not in ("", "0") or "--fast" in sys.argv

# Full-size data and models, fast-mode loop lengths: the test suite's full-mode run (see
# loop_length). Meaningless in fast mode, where the loops are short anyway.
SHORT_LOOPS = not FAST and os.environ.get("MINICNN_TUTORIAL_SHORT_LOOPS", "") not in ("", "0")


def loop_length(full: int, fast: int) -> int:
    """Length of a training loop (steps, epochs, repetitions) in the running mode.

    ``fast`` in fast mode, ``full`` in full mode (the default), and ``fast`` again in full mode
    with ``MINICNN_TUTORIAL_SHORT_LOOPS=1``: there the data sets and models keep their full
    size, so every full-size code path runs, but the loops that take the time are short.
    Claims that only hold after the full-length training go through ``claim``.
    """
    return fast if (FAST or SHORT_LOOPS) else full


def claim(holds, what: str) -> None:
    """Assert ``holds`` (a claim the text makes about a training run), saying ``what`` it is.

    A claim about what training *reaches* only holds in a run that trained that long. In fast
    and full mode the tutorial really does, so the claim is asserted (``AssertionError`` naming
    ``what`` if not). With ``MINICNN_TUTORIAL_SHORT_LOOPS=1`` the loops were cut short, so the
    claim is evaluated and printed, not asserted. Returns None.
    """
    holds = bool(holds)
    if SHORT_LOOPS:
        print(f"[short loops] not asserted (the training was cut short): {what} -- "
              f"{'holds' if holds else 'does not hold'} in this run")
        return
    assert holds, f"claim does not hold in this run: {what}"

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
    """Check a short exercise answer (a number, a shape, a list) against ``expected``.

    Numbers and arrays are compared with a tolerance, counts, sizes and shapes exactly,
    anything else with ``==``. Prints a verdict. A wrong (or missing) answer prints what was
    expected and the tutorial carries on; with ``MINICNN_TUTORIAL_STRICT=1`` or
    ``MINICNN_TUTORIAL_SOLUTIONS=1`` it raises ``AssertionError`` instead (the test suite runs
    the notebooks that way, so an answer that stops being right fails a test). Returns None
    (nothing echoed in a notebook).
    """
    problem = _answer_problem(what, answer, expected, rtol, atol)
    if problem is None:
        print(f"{what}: correct!")
        return
    if solutions_enabled() or _flag("MINICNN_TUTORIAL_STRICT"):
        raise AssertionError(problem)
    print(f"[check] {problem}. Change your answer and run this cell again.")


def _answer_problem(what: str, answer, expected, rtol: float, atol: float) -> str | None:
    """None if ``answer`` matches ``expected``, else a sentence saying what is wrong."""
    if answer is None:
        return f"{what}: no answer yet -- replace the None with your answer"
    if _all_integers(answer) and _all_integers(expected):
        # Counts, sizes and shapes are exact: a tolerance would let 1,572,860 bytes pass.
        if np.shape(answer) != np.shape(expected) or not np.array_equal(answer, expected):
            return f"{what}: not quite -- got {answer!r}, expected {expected!r}"
        return None
    try:
        ok = np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                         rtol=rtol, atol=atol) and np.shape(answer) == np.shape(expected)
    except (TypeError, ValueError):
        ok = answer == expected
    if not ok:
        return f"{what}: not quite -- got {answer!r}, expected {expected!r}"
    return None


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


class _RecordedCalls:
    """Wraps the learner's function and remembers its last call (arguments, result), so that a
    failure can say what was called with which shapes."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.last_arguments = None          # (args, kwargs) of the last call
        self.returned = False               # did the last call return (or raise)?
        self.last_result = None

    def __call__(self, *args, **kwargs):
        self.last_arguments, self.returned, self.last_result = (args, kwargs), False, None
        result = self.fn(*args, **kwargs)
        self.returned, self.last_result = True, result
        return result


def describe(value) -> str:
    """A short description of an argument or result: an array's shape and dtype, a tuple's
    items, a scalar's value, a list's length (the parameters of a layer are listed by shape)."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}, {value.dtype}"
    if hasattr(value, "data") and isinstance(getattr(value, "data"), np.ndarray):
        return f"{type(value).__name__} with .data of shape {value.data.shape}"
    if isinstance(value, tuple):
        return "(" + ", ".join(describe(item) for item in value) + ")"
    if isinstance(value, list):
        shown = ", ".join(describe(item) for item in value[:4])
        return f"a list of {len(value)}: [{shown}{', ...' if len(value) > 4 else ''}]"
    if isinstance(value, (bool, int, float, str, np.generic)) or value is None:
        return repr(value)
    return type(value).__name__


# What usually causes each kind of exception in an exercise, said as a hint.
_HINTS = {
    ValueError: "a shape mismatch (arrays that cannot be multiplied, broadcast or reshaped): "
                "print the shapes on that line and compare them with the docstring's; a "
                "missing transpose (.T) or swapped kernel sizes (kH/kW) are the usual causes",
    IndexError: "an index past the end of an array: check the loop ranges and the output-size "
                "formula, and where padding moves the indices",
    TypeError: "a wrong type or number of arguments: compare your function's signature and "
               "return value with the stub's docstring (None returned where an array was "
               "expected shows up here too)",
    AttributeError: "an attribute that does not exist: often None where an array was expected "
                    "(a function that forgot to return), or a list where an array was meant",
    KeyError: "a missing key: check the names you look up",
    ZeroDivisionError: "a division by zero: check the sizes you divide by",
    FloatingPointError: "a floating-point error (overflow, invalid value): check for exp of "
                        "large numbers or log of 0",
}


def _hint_for(error: BaseException) -> str:
    for kind, hint in _HINTS.items():
        if isinstance(error, kind):
            return hint
    return "read the error above and the line it points to"


def _learner_line(error: BaseException, fn) -> str | None:
    """``line N: <code>`` of the innermost traceback frame in the learner's function's file."""
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
    if code is None:
        return None
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if frame.filename == code.co_filename]
    if not frames:
        return None
    frame = frames[-1]
    text = f" `{frame.line.strip()}`" if frame.line else ""
    return f"line {frame.lineno} (in {frame.name}){text}"


def _crash_message(name: str, error: BaseException, recorded: _RecordedCalls) -> str:
    """What was called, with which shapes, what went wrong and where, and a hint."""
    lines = [f"{name} raised {type(error).__name__}: {error}"]
    if recorded.last_arguments is not None:
        args, kwargs = recorded.last_arguments
        try:        # name every argument, positional ones included
            named = inspect.signature(recorded.fn).bind(*args, **kwargs).arguments.items()
            shown = [f"{key}={describe(value)}" for key, value in named]
        except (TypeError, ValueError):     # the call itself did not fit the signature
            shown = [describe(value) for value in args]
            shown += [f"{key}={describe(value)}" for key, value in kwargs.items()]
        lines.append(f"  called as {name}({', '.join(shown)})")
        if recorded.returned:
            lines.append(f"  it returned {describe(recorded.last_result)}, which the check "
                         f"could not use (compare it with what the docstring asks for)")
    where = _learner_line(error, recorded.fn)
    if where and not recorded.returned:
        lines.append(f"  in your code at {where}")
    lines.append(f"  hint: {_hint_for(error)}")
    return "\n".join(lines)


def check_exercise(name: str, learner_fn, check, reference):
    """Test the learner's function and return what the tutorial carries on with.

    Runs ``check(learner_fn)``; ``check`` raises ``AssertionError`` with a precise message
    (which shape, which gradient, relative error, ...) when the answer is wrong.

    - ``learner_fn`` raises ``NotImplementedError`` (the stub as shipped): prints one line
      saying the exercise is not filled in yet and that the tutorial carries on with the
      library's version; returns ``reference``.
    - The check fails (``AssertionError``), or the learner's code raises anything else (a
      ``ValueError`` from a shape bug, an ``IndexError``, a ``TypeError``, ...): prints the
      message -- for an exception, what was called with which shapes, what went wrong, on
      which line of the learner's code, and a hint; with ``MINICNN_TUTORIAL_SOLUTIONS=1`` or
      ``MINICNN_TUTORIAL_STRICT=1`` re-raises (so tests catch a wrong solution), otherwise
      returns ``reference`` so the tutorial still runs top to bottom.
    - The check passes: prints a one-line "correct" message; returns ``learner_fn``.

    Always returns a callable; the caller assigns it, so nothing is echoed in a notebook.
    """
    recorded = _RecordedCalls(learner_fn)
    try:
        check(recorded)
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
    except Exception as crash:      # noqa: BLE001 -- any bug in the learner's code is a message
        print(f"[exercise] {_crash_message(name, crash, recorded)}")
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
