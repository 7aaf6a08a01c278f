"""What the tutorial-exercise tests share: the tutorials folder on ``sys.path`` (so that
``exercise_checks`` and ``tutorial_tools`` import as the tutorials import them), a worked
solution by name, and the assertion that a check rejects a wrong answer with a message."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TUTORIALS_DIR = Path(__file__).resolve().parent.parent / "tutorials"
if str(TUTORIALS_DIR) not in sys.path:
    sys.path.insert(0, str(TUTORIALS_DIR))


def solution(stem: str, name: str):
    """Function ``name`` from ``tutorials/solutions/<stem>.py`` (a file name that starts with
    a digit, so it is loaded from its path)."""
    spec = importlib.util.spec_from_file_location(f"_solution_{stem}",
                                                  TUTORIALS_DIR / "solutions" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def rejects(check, wrong, *fragments) -> None:
    """``check(wrong)`` raises ``AssertionError`` whose message mentions every fragment."""
    with pytest.raises(AssertionError) as caught:
        check(wrong)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"message does not mention {fragment!r}:\n{message}"
