"""Wall-clock timing: warm-up, repeats, and robust statistics (median and quartiles).

Everything is timed with :func:`time.perf_counter`; the garbage collector is paused while a
repeat runs so that a collection triggered by someone else's garbage does not land in one
sample. A median over repeats with its inter-quartile range (IQR) is what every report shows:
on a shared machine the mean is pulled by the occasional slow repeat, the median is not.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Summary of one quantity timed ``repeats`` times (all in seconds).

    Attributes
    ----------
    median, q25, q75, min, max, mean : float
    samples : tuple of float
        Every repeat, in the order it ran.
    """

    median: float
    q25: float
    q75: float
    min: float
    max: float
    mean: float
    samples: tuple[float, ...]

    @property
    def iqr(self) -> float:
        """Inter-quartile range ``q75 - q25``: the spread reported beside the median."""
        return self.q75 - self.q25

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the samples (0-100, linear interpolation between the
        two nearest samples, NumPy's default): ``percentile(99)`` is the tail latency that one
        call in a hundred exceeds. With fewer than 100 samples it lies between the two largest.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile: q must be within 0-100, got {q}")
        return float(np.percentile(np.asarray(self.samples, dtype=np.float64), q))

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def to_dict(self) -> dict:
        """Milliseconds, for JSON: ``median_ms``, ``iqr_ms``, quartiles, the 90th and 99th
        percentiles, extremes, samples."""
        ms = 1e3
        return {"median_ms": self.median * ms, "iqr_ms": self.iqr * ms,
                "q25_ms": self.q25 * ms, "q75_ms": self.q75 * ms,
                "p90_ms": self.p90 * ms, "p99_ms": self.p99 * ms,
                "min_ms": self.min * ms, "max_ms": self.max * ms, "mean_ms": self.mean * ms,
                "repeats": self.repeats, "samples_ms": [s * ms for s in self.samples]}


def summarize(samples) -> Stats:
    """:class:`Stats` of a non-empty sequence of durations in seconds.

    Raises
    ------
    ValueError
        If ``samples`` is empty.
    """
    values = np.asarray(list(samples), dtype=np.float64)
    if values.size == 0:
        raise ValueError("summarize: no samples (repeats must be at least 1)")
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return Stats(float(median), float(q25), float(q75), float(values.min()),
                 float(values.max()), float(values.mean()), tuple(float(v) for v in values))


@contextmanager
def gc_paused():
    """Disable the cyclic garbage collector inside the block (as :mod:`timeit` does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_call(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def time_forward_backward(forward: Callable[[], object], backward: Callable[[], object],
                          reset: Callable[[], object], repeats: int,
                          warmup: int) -> tuple[Stats, Stats]:
    """Time ``forward`` and ``backward`` separately, ``repeats`` times after ``warmup``.

    Each repeat runs ``reset()`` (untimed: zeroing gradients), then ``forward()`` (timed),
    then ``backward()`` (timed), so backward always sees the state its forward left.

    Returns
    -------
    (forward_stats, backward_stats)
    """
    for _ in range(warmup):
        reset()
        forward()
        backward()
    forward_times, backward_times = [], []
    for _ in range(repeats):
        reset()
        with gc_paused():
            forward_times.append(time_call(forward))
            backward_times.append(time_call(backward))
    return summarize(forward_times), summarize(backward_times)


def time_interleaved(functions: dict[str, Callable[[], object]], repeats: dict[str, int] | int,
                     warmup: dict[str, int] | int) -> dict[str, Stats]:
    """Time several competitors *in turns*, so that machine noise hits them all alike.

    Round ``r`` runs every competitor once (those with fewer ``repeats`` drop out when
    theirs are done), starting from a different one each round so none always runs right
    after the same neighbour.

    Parameters
    ----------
    functions : {name: callable}
    repeats, warmup : int or {name: int}
        Per competitor, or one value for all.

    Returns
    -------
    {name: Stats}
    """
    names = list(functions)
    reps = repeats if isinstance(repeats, dict) else {n: repeats for n in names}
    warm = warmup if isinstance(warmup, dict) else {n: warmup for n in names}
    for name in names:
        for _ in range(warm[name]):
            functions[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for round_index in range(max(reps[n] for n in names)):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if len(samples[name]) < reps[name]:
                with gc_paused():
                    samples[name].append(time_call(functions[name]))
    return {name: summarize(samples[name]) for name in names}


def time_blocks(functions: dict[str, Callable[[], object]], repeats: dict[str, int] | int,
                warmup: dict[str, int] | int) -> dict[str, Stats]:
    """Like :func:`time_interleaved`, but each competitor runs its warm-up and all its repeats
    back to back before the next one starts."""
    names = list(functions)
    reps = repeats if isinstance(repeats, dict) else {n: repeats for n in names}
    warm = warmup if isinstance(warmup, dict) else {n: warmup for n in names}
    result = {}
    for name in names:
        for _ in range(warm[name]):
            functions[name]()
        samples = []
        for _ in range(reps[name]):
            with gc_paused():
                samples.append(time_call(functions[name]))
        result[name] = summarize(samples)
    return result
