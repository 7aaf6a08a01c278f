"""Generic fixtures shared by every test module (keep data-set logic out of here)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test, so every test is repeatable on its own."""
    return np.random.default_rng(0)
