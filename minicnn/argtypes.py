"""What the command lines (``minicnn`` and ``minicnn bench``) share: argparse ``type=``
functions, so that nonsense is refused while parsing with exit code 2 and one line saying what
was expected, and :class:`UserError`, a problem the user can fix (one line, exit code 1)."""

from __future__ import annotations

import argparse
import os
import sys


def whole_number(minimum: int):
    """An argparse ``type`` accepting whole numbers ``>= minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def non_negative_float(text: str) -> float:
    """A finite number ``>= 0`` (NaN and infinity are refused)."""
    value = _number(text)
    if not value >= 0 or value == float("inf"):     # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A number ``> 0``."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def name_list(text: str, allowed, what: str, example: str) -> tuple[str, ...]:
    """A comma-separated list of names from ``allowed``, in order, repeats dropped: the type of
    options such as ``--backends numba,torch`` and ``--competitors torch-tuned,onnxruntime``.

    Raises
    ------
    argparse.ArgumentTypeError
        For an empty entry (``"a,,b"``), naming an example, or an unknown name, listing the
        choices; ``what`` is the plural noun (``"backends"``).
    """
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty name in {text!r}; expected e.g. {example}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(allowed)}")
    return tuple(dict.fromkeys(names))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def thread_count(text: str) -> int:
    """An argparse ``type`` for ``--threads``: at least 1; more than the machine has is capped,
    with a warning (not an error: a command written for a bigger machine should still run)."""
    value = positive_int(text)
    cores = available_cores()
    if value > cores:
        print(f"minicnn: warning: --threads {value} is more than the {cores} core(s) here; "
              f"using {cores}", file=sys.stderr)
        return cores
    return value


class UserError(Exception):
    """A problem the user can fix; the command line prints it as one line, exit code 1."""
