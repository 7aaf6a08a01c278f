"""Compile independent kernels in several processes at once, through Numba's cache.

Why. Numba compiles one function at a time in a process (it holds a global lock while it
compiles), and compiling is most of a cold start: with an empty kernel cache the MNIST CNN's
first planned call spent about 14 of its 15 s compiling on a 2-core AMD EPYC. A network plan's
kernels come in *units* that do not link each other's code (the step kernels and the entry
points call one another through function pointers, :mod:`minicnn.kernels.network`), so they can
be compiled apart. Where some units are neither compiled in this process nor in Numba's cache
and the machine has a core to spare, :func:`compile_units` hands the biggest to worker
processes (``python -m minicnn.kernels.parallel_compile``) and compiles the rest itself.

How a worker's result arrives. Each worker compiles into a cache folder of its own
(``NUMBA_CACHE_DIR``), so no two processes ever write the same cache file: Numba's cache is not
safe for that (two processes numbering one function's data files at once can leave one
signature's index entry naming another signature's code). A worker prints, for each unit, the
index and data file it wrote (one JSON line each); this process copies them into its own cache
(atomically, data before index, and only where its cache holds no current index for that
function, so nothing of its own is overwritten) and then loads them as Numba loads any cached
kernel. Whatever goes wrong (no spare core, a worker that fails or runs long, a unit the worker
cannot take), every unit is still compiled here: the result is the same, only slower.

A module whose dispatchers are handed out provides ``canonical_signatures()``: each unit's
argument types for the arguments it is normally called with. A worker rebuilds them itself
(nothing is pickled between processes), and only units asked for with exactly those types
are handed out. This reads a few private attributes of Numba's cache (its index and file
names); :func:`compile_units` checks for them and compiles everything here where they are
missing.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

#: Seconds a worker spends before it compiles anything (starting Python and importing Numba and
#: minicnn; about 0.6 s on a 2-core AMD EPYC), counted against it when the units are shared out.
WORKER_START_SECONDS = 1.0

#: A unit expected to compile in less than this is not worth a process of its own.
MIN_WORKER_SECONDS = 1.5

#: How long to wait for the workers once this process has compiled its own share.
WORKER_TIMEOUT_SECONDS = 300.0

#: Set to ``0`` to compile everything in this process; unset, one worker per spare core
#: (at most :data:`MAX_WORKERS`).
WORKERS_VARIABLE = "MINICNN_COMPILE_WORKERS"
MAX_WORKERS = 3


def worker_count() -> int:
    """How many worker processes :func:`compile_units` may start: ``MINICNN_COMPILE_WORKERS``
    where set, else one per core this process may run on beyond its own (at most
    :data:`MAX_WORKERS`)."""
    setting = os.environ.get(WORKERS_VARIABLE, "").strip()
    if setting:
        try:
            return max(0, int(setting))
        except ValueError:
            raise ValueError(f"{WORKERS_VARIABLE} must be a whole number of worker "
                             f"processes, not {setting!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:          # (not on every platform)
        cores = os.cpu_count() or 1
    return max(0, min(MAX_WORKERS, cores - 1))


class CacheFiles(NamedTuple):
    """Where Numba's cache keeps a dispatcher's compiled code for one signature."""

    index: Path             #: the function's index file
    data: Path | None       #: the signature's data file, None where the index has none
    current: bool           #: the index exists and matches the function's source


def _cache_files(dispatcher, args) -> CacheFiles | None:
    """:class:`CacheFiles` of ``dispatcher``'s compiled code for ``args``, or None where the
    cache's layout is not the one this module knows (or the dispatcher is not cached)."""
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    try:
        index = cache_file._load_index()
        key = cache._index_key(tuple(args), dispatcher.targetctx.codegen())
        index_path = Path(cache_file._index_path)
        data_name = index.get(key)
        data_path = Path(cache_file._data_path(data_name)) if data_name else None
    except Exception:   # another Numba, a NullCache, an unreadable index: no worker for it
        return None
    return CacheFiles(index_path, data_path, bool(index))


def _share(units: dict, seconds: dict, workers: int, own: float):
    """Each worker's unit names (a list per worker; the biggest units first, each to the
    least loaded of this process and the workers), from ``units`` that may be handed out,
    this process having ``own`` seconds of compiling to do besides."""
    loads = [own] + [WORKER_START_SECONDS] * workers
    shares: list[list[str]] = [[] for _ in loads]
    for name in sorted(units, key=lambda n: -seconds.get(n, 0.0)):
        target = min(range(len(loads)), key=lambda b: loads[b])
        loads[target] += seconds.get(name, 0.0)
        shares[target].append(name)
    # A worker with less than MIN_WORKER_SECONDS of compiling is not worth starting.
    return [share for b, share in enumerate(shares[1:], 1)
            if share and loads[b] - WORKER_START_SECONDS >= MIN_WORKER_SECONDS]


def compile_units(module_name: str, units: dict, seconds: dict | None = None) -> None:
    """Compile (or load from Numba's cache) ``module_name``'s dispatchers named in ``units``
    (``{name: argument types}``), handing some to worker processes where that helps.

    Parameters
    ----------
    module_name : str
        The module the dispatchers are attributes of, with ``canonical_signatures()``.
    units : dict
        ``{dispatcher attribute name: tuple of Numba argument types}``.
    seconds : dict, optional
        Each unit's expected compile time with an empty cache (relative figures do), which
        decides what goes to workers; a unit without one is compiled here.
    """
    module = sys.modules[module_name]
    seconds = seconds or {}
    todo = {name: tuple(args) for name, args in units.items()
            if tuple(args) not in getattr(module, name).overloads}
    workers = worker_count() if len(todo) > 1 else 0
    handed: dict[str, tuple] = {}
    if workers:
        canonical = module.canonical_signatures()
        for name, args in todo.items():
            files = _cache_files(getattr(module, name), args)
            if (files is not None and files.data is None and not files.current
                    and canonical.get(name) == args):
                handed[name] = args     # not in the cache at all: worth compiling elsewhere
    started = []
    if len(handed) > 1 or (handed and len(todo) > len(handed)):
        own = sum(seconds.get(name, 0.0) for name in todo if name not in handed)
        for share in _share(handed, seconds, workers, own):
            worker = _Worker.start(module_name, share)
            if worker is not None:
                started.append(worker)
    theirs = {name for worker in started for name in worker.names}
    for name, args in todo.items():
        if name not in theirs:
            getattr(module, name).compile(args)
    for worker in started:
        worker.finish(module)
    for name in theirs:     # loaded from the cache where the worker's files arrived
        getattr(module, name).compile(todo[name])


class _Worker:
    """A worker process compiling ``names`` of a module into its own cache folder."""

    def __init__(self, names, process, folder):
        self.names, self.process, self.folder = names, process, folder

    @classmethod
    def start(cls, module_name: str, names: list):
        folder = tempfile.mkdtemp(prefix="minicnn-compile-")
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, NUMBA_CACHE_DIR=folder, **{WORKERS_VARIABLE: "0"})
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        try:
            # stderr to a file: a pipe nobody reads until the end could fill and stall it
            with open(Path(folder) / "stderr.txt", "w") as errors:
                process = subprocess.Popen(
                    [sys.executable, "-m", __name__, module_name, *names],
                    stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL,
                    env=env, text=True)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return cls(names, process, folder)

    def finish(self, module) -> None:
        """Wait for the worker, then copy what it compiled into this process's cache."""
        try:
            out, _ = self.process.communicate(timeout=WORKER_TIMEOUT_SECONDS)
            err = (Path(self.folder) / "stderr.txt").read_text(errors="replace")
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            out, err = "", "timed out"
        try:
            if self.process.returncode != 0:
                last = err.strip().splitlines()[-1:] or ["no message"]
                warnings.warn(f"compiling {', '.join(self.names)} in a second process failed "
                              f"({last[0]}); compiled in this one instead", RuntimeWarning,
                              stacklevel=3)
                return
            for line in out.splitlines():
                if line.startswith("{"):
                    self._adopt(module, json.loads(line))
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _adopt(self, module, report: dict) -> None:
        """Copy one unit's index and data file into this process's cache, where it holds
        nothing current for that function."""
        name = report.get("name")
        if name not in self.names:
            return
        dispatcher = getattr(module, name)
        files = _cache_files(dispatcher, module.canonical_signatures()[name])
        if files is None or files.current:  # this cache has an index of its own: keep it
            return
        index_path = files.index
        source_index, source_data = Path(report["index"]), Path(report["data"])
        if (source_index.name != index_path.name
                or not Path(self.folder) in source_index.parents
                or not Path(self.folder) in source_data.parents):
            return
        try:
            index_path.parent.mkdir(parents=True, exist_ok=True)
            for source in (source_data, source_index):      # the index last
                target = index_path.parent / source.name
                temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                shutil.copyfile(source, temporary)
                os.replace(temporary, target)
        except OSError:
            return      # (compiled here instead)


def _work(module_name: str, names: list) -> int:
    """A worker: compile ``names`` for their canonical signatures, report their cache files."""
    module = importlib.import_module(module_name)
    signatures = module.canonical_signatures()
    for name in names:
        dispatcher = getattr(module, name)
        args = signatures[name]
        dispatcher.compile(args)
        files = _cache_files(dispatcher, args)
        if files is None or files.data is None:
            continue        # not cached (nothing to hand over): the caller compiles it
        print(json.dumps({"name": name, "index": str(files.index), "data": str(files.data)}),
              flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: python -m {__name__} MODULE NAME [NAME ...]")
    sys.exit(_work(sys.argv[1], sys.argv[2:]))
