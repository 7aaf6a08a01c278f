"""Before anything is timed, every implementation must compute the same numbers.

A benchmark of a wrong kernel is worthless, so each layer and model is first run once by
every backend on the same input, weights and upstream gradient, and each array (output,
input gradient, weight and bias gradients) is compared with the first backend's. A
difference beyond float32 round-off stops the run with an :class:`AgreementError` that names
the case, the backend and the array.
"""

from __future__ import annotations

import numpy as np

#: Relative tolerance per element, and absolute tolerance relative to the array's scale
#: (its largest magnitude, at least 1). float32 round-off in these sums is ~1e-6 relative;
#: a wrong index, window, padding or scale gives errors of order 1.
RTOL = 1e-3
ATOL = 1e-3


class BenchError(Exception):
    """A benchmark cannot run or its result would be meaningless; printed as one line."""


class AgreementError(BenchError):
    """Two backends disagree on a case: at least one of them computes the wrong thing."""


def compare(case: str, backend: str, baseline: str, what: str, actual, expected,
            rtol: float = RTOL, atol: float = ATOL) -> None:
    """Check ``actual`` (from ``backend``) against ``expected`` (from ``baseline``).

    Passes when every element satisfies
    ``|actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|``.

    Raises
    ------
    AgreementError
        On a shape mismatch, a non-finite value, or a difference beyond the tolerance; the
        message names ``case``, ``backend``, ``baseline`` and ``what`` (e.g. "input grad").
    """
    head = f"agreement check failed for {case}: backend {backend!r} {what}"
    if actual is None or expected is None:
        if actual is None and expected is None:
            return
        raise AgreementError(f"{head} is {'missing' if actual is None else 'present'} but "
                             f"{baseline!r} {'has' if actual is None else 'has no'} one")
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AgreementError(f"{head} has shape {actual.shape}, {baseline!r} gives "
                             f"{expected.shape}")
    if not np.all(np.isfinite(actual)):
        bad = int(actual.size - np.count_nonzero(np.isfinite(actual)))
        raise AgreementError(f"{head} has {bad} NaN/infinite value(s)")
    if actual.size == 0:
        return
    scale = max(1.0, float(np.max(np.abs(expected))))
    diff = np.abs(actual - expected)
    allowed = atol * scale + rtol * np.abs(expected)
    if np.all(diff <= allowed):
        return
    worst = np.unravel_index(int(np.argmax(diff - allowed)), diff.shape)
    bad = int(np.count_nonzero(diff > allowed))
    raise AgreementError(
        f"{head} differs from {baseline!r}: {bad} of {diff.size} elements out of tolerance, "
        f"worst at index {tuple(int(i) for i in worst)}: {actual[worst]:.6g} vs "
        f"{expected[worst]:.6g} (max |diff| {diff.max():.3g}, scale {scale:.3g}, rtol {rtol}, "
        f"atol {atol} x scale). Timing a wrong kernel is meaningless: fix it or leave "
        f"{backend!r} out of --backends")


def compare_all(case: str, outputs: dict[str, dict[str, np.ndarray]]) -> None:
    """Compare every backend's arrays with the first backend's.

    Parameters
    ----------
    case : str
        Name and shape of the case, for messages.
    outputs : {backend: {what: array}}
        In the order the backends run; the first is the baseline.
    """
    backends = list(outputs)
    if len(backends) < 2:
        return
    baseline = backends[0]
    for backend in backends[1:]:
        for what, expected in outputs[baseline].items():
            compare(case, backend, baseline, what, outputs[backend].get(what), expected)
