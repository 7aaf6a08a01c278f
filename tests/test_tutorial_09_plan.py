"""Tutorial 09, section 7 (one image at a time, the whole-network plan): its exercise check.

The learner writes ``arithmetic_floor_us(flops, gflops)``. The check and the library version
live in the tutorial's exercise cell (they are three short functions, used nowhere else);
these tests run that one cell, not the tutorial, and hold the check to accepting right
answers written in different ways and rejecting the usual unit slips with a message that
names them. The section's timings are not tested (they are measured live and only printed);
its correctness claim (the plan equals the layers) is asserted by the tutorial itself and by
``tests/test_inference_plan.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# tutorial_helpers puts tutorials/ on sys.path, so tutorial_tools imports as the tutorial
# imports it.
from tutorial_helpers import TUTORIALS_DIR, rejects, solution

import tutorial_tools  # noqa: E402

TUTORIAL = TUTORIALS_DIR / "09_making_it_fast.py"


@pytest.fixture(scope="module")
def exercise_cell() -> dict:
    """The namespace left by running the exercise cell of section 7 alone (the stub as
    shipped, the library version, the check, and what ``check_exercise`` handed back)."""
    cells = TUTORIAL.read_text(encoding="utf-8").split("\n# %%")
    matching = [cell for cell in cells if "def check_arithmetic_floor_us(" in cell]
    assert len(matching) == 1, f"{TUTORIAL.name}: expected one cell defining the check"
    namespace = {"np": np, "exercise": tutorial_tools.exercise,
                 "check_exercise": tutorial_tools.check_exercise}
    # The stub as shipped, whatever the environment says: @exercise would swap in the
    # solution, and check_exercise re-raise, under these two.
    saved = {name: os.environ.pop(name, None)
             for name in ("MINICNN_TUTORIAL_SOLUTIONS", "MINICNN_TUTORIAL_STRICT")}
    try:
        exec(compile(matching[0], str(TUTORIAL), "exec"), namespace)   # noqa: S102 (our file)
    finally:
        os.environ.update({name: value for name, value in saved.items() if value is not None})
    return namespace


def test_the_check_accepts_the_solution_the_library_and_another_right_form(exercise_cell):
    def in_nanoseconds_then_converted(flops, gflops):
        return (np.asarray(flops) / gflops) / 1e3          # flops / gflops is nanoseconds

    check = exercise_cell["check_arithmetic_floor_us"]
    for right in (solution("09_making_it_fast", "arithmetic_floor_us"),
                  exercise_cell["library_arithmetic_floor_us"], in_nanoseconds_then_converted):
        check(right)


def test_the_library_version_has_the_right_units(exercise_cell):
    library = exercise_cell["library_arithmetic_floor_us"]
    assert library(1e9, 1.0) == pytest.approx(1e6)        # 1 GFLOP at 1 GFLOP/s: one second
    assert library(8.6e6, 86.0) == pytest.approx(100.0)
    floors = library(np.array([0.0, 4e6]), 40.0)
    assert floors.shape == (2,) and floors[1] == pytest.approx(100.0) and floors[0] == 0


@pytest.mark.parametrize("unit, factor", [("milliseconds", 1e3), ("seconds", 1e6),
                                          ("nanoseconds", 1e-3)])
def test_the_check_names_a_unit_slip(exercise_cell, unit, factor):
    def slipped(flops, gflops):
        return np.asarray(flops) / (gflops * 1e9) * 1e6 / factor

    rejects(exercise_cell["check_arithmetic_floor_us"], slipped, unit, "microseconds")


def test_the_check_rejects_a_ratio_upside_down_and_a_lost_shape(exercise_cell):
    check = exercise_cell["check_arithmetic_floor_us"]
    rejects(check, lambda flops, gflops: gflops * 1e9 / np.maximum(flops, 1) * 1e6,
            "arithmetic_floor_us(2000000000.0, 1.0)", "expected")
    rejects(check, lambda flops, gflops: float(np.sum(flops)) / (gflops * 1e9) * 1e6,
            "shape ()", "one floor per entry")
    rejects(check, lambda flops, gflops: None, "returned None")


def test_the_shipped_stub_is_unfilled_and_the_tutorial_carries_on(exercise_cell, monkeypatch,
                                                                  capsys):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)
    stub = exercise_cell["arithmetic_floor_us"]
    with pytest.raises(NotImplementedError):
        stub(1e9, 1.0)
    # The cell itself carried on with the library's version, and says so.
    assert exercise_cell["floor_us"] is exercise_cell["library_arithmetic_floor_us"]
    carried_on = tutorial_tools.check_exercise(
        "arithmetic_floor_us", stub, exercise_cell["check_arithmetic_floor_us"],
        reference=exercise_cell["library_arithmetic_floor_us"])
    assert carried_on is exercise_cell["library_arithmetic_floor_us"]
    assert "not filled in yet" in capsys.readouterr().out
