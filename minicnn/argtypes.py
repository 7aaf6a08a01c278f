"""argparse ``type=`` functions shared by the command lines (``minicnn`` and ``minicnn bench``):
nonsense is refused while parsing, with exit code 2 and one line saying what was expected."""

from __future__ import annotations

import argparse


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
