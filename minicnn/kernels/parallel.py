"""Run a compiled *chunk kernel* once on every Numba thread, the kernel passed as a pointer.

The one-pool kernels split a layer's work into one chunk per thread. Each chunk kernel is
plain compiled code with one calling convention::

    chunk(args, plan, thread, n_threads)

- ``args`` is the family's *arguments record*, a ``typing.NamedTuple`` of the layer's arrays,
  flags, modes and function pointers (``args.x``, ``args.dw_partial``, ``args.write_output``),
  defined once beside the family's chunk kernels;
- ``plan`` is a record of plain ints, the sizes (``plan.kh``, ``plan.pitch``): a convolution's
  :class:`~minicnn.kernels.contracts.ConvPlan`, or :data:`NO_PLAN` for a family that reads
  every size from its arrays' shapes;
- the chunk works out its own share of the items (:func:`share`) and writes only its own
  slice of any per-thread buffer (``args.dw_partial[thread]``).

:func:`run` calls the chunk directly for one thread, or from one ``prange`` loop for several.
The sizes are a record of their own, not a field of ``args``, because a ``prange`` loop cannot
take a tuple nested in a tuple (named or not: Numba's parallel lowering refuses it as a
"non scalar argument"), while it takes any number of flat records.

Why a pointer and not a call: a ``prange`` loop that calls another ``@njit`` function links
that function's code into its own, and LLVM optimises all of it again. With one parallel loop
per chunk kernel, that cost 1-2 s of compile time per kernel in a cold start (an empty kernel
cache), most of it spent re-optimising code that was already compiled. Called through a
first-class function pointer, a chunk kernel is compiled once, and one compiled loop serves
every chunk kernel whose ``args`` and ``plan`` have the same types (the convolution's two
forward paths share one loop, and its two backward paths another).

The pointer costs a few microseconds per parallel region (Numba asks Python for the address
each call), nothing next to a convolution. Linear and ReLU keep their own small ``prange``
loops (:mod:`minicnn.kernels.dense`, :mod:`minicnn.kernels.pointwise`): their chunk code is so
short that re-optimising it costs little, and they run many short regions.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.core.types.function_type import CompileResultWAP

#: Set by the test suite: check on every call that ``args`` still has the types the kernels
#: were compiled for (see :func:`run`).
CHECK_ARGUMENT_TYPES = False


@njit(**dict(cache=True, nogil=True))
def share(n_items, thread, n_threads):
    """Items ``[first, last)`` of ``n_items`` that thread ``thread`` of ``n_threads`` takes:
    contiguous, in thread order, sizes differing by at most one."""
    return thread * n_items // n_threads, (thread + 1) * n_items // n_threads


#: The ``plan`` of a chunk kernel that needs no sizes beyond its arrays' shapes.
NO_PLAN = ()


def _run_chunks(chunk, args, plan, n_threads):
    for thread in prange(n_threads):
        # The loop index can be unsigned inside the parallel region; a pointer call does not
        # convert arguments, so make it the intp the chunk was compiled for.
        chunk(args, plan, np.intp(thread), n_threads)


# One dispatcher, compiled on demand for each (chunk signature, args and plan types); cached
# on disk.
_run_chunks_jit = njit(parallel=True, cache=True, nogil=True)(_run_chunks)

# (chunk, key) -> (chunk entry point, loop entry point, chunk pointer, args type, plan type)
_compiled: dict = {}


def _compile(chunk, args, plan):
    """Compile ``chunk`` and the parallel loop for the types of ``args`` and ``plan``."""
    args_type, plan_type = numba.typeof(args), numba.typeof(plan)
    chunk_sig = types.void(args_type, plan_type, types.intp, types.intp)
    chunk.compile(chunk_sig.args)
    pointer = CompileResultWAP(chunk.overloads[chunk_sig.args])
    loop_args = (types.FunctionType(chunk_sig), args_type, plan_type, types.intp)
    _run_chunks_jit.compile(loop_args)
    return (chunk.overloads[chunk_sig.args].entry_point,
            _run_chunks_jit.overloads[loop_args].entry_point, pointer, args_type, plan_type)


# (function, argument types) -> its first-class pointer
_pointers: dict = {}


def pointer(function, arg_types: tuple):
    """``function`` (an ``@njit`` dispatcher) compiled for ``arg_types``, as a first-class
    function pointer that compiled code can take as an argument (in ``args``) and call.

    The same reason as for chunk kernels: a kernel that *calls* another ``@njit`` function
    links that function's code into its own and LLVM optimises it again, in every kernel that
    calls it. A helper several chunk kernels share (the convolution's output pass and its
    gradient read, four kernels) is compiled once this way. The call converts nothing:
    compiled code must pass exactly ``arg_types``.
    """
    key = (function, arg_types)
    wap = _pointers.get(key)
    if wap is None:
        function.compile(arg_types)
        wap = _pointers[key] = CompileResultWAP(function.overloads[arg_types])
    return wap


def run(chunk, args: tuple, plan: tuple, n_threads: int, key) -> None:
    """``chunk(args, plan, t, n_threads)`` for every thread ``t``, in one parallel region.

    Parameters
    ----------
    chunk : numba Dispatcher
        A chunk kernel (see the module docstring).
    args : NamedTuple
        Its arguments record. The field types must be fixed by ``key``: C-contiguous arrays of
        one dtype and fixed dimensions, Python ints and bools, function pointers
        (:func:`pointer`); no tuple inside it.
    plan : NamedTuple of ints, or :data:`NO_PLAN`
        Its sizes, a flat record of Python ints.
    n_threads : int
        Threads to split the work into, at least 1; 1 calls the chunk directly, with no
        parallel region.
    key : hashable
        Whatever, together with ``chunk``, fixes the types of ``args`` and ``plan`` (usually
        the dtype).
        The compiled entry points are called without Numba's per-call type dispatch (which
        costs tens of microseconds for a tuple), so they are looked up by this key.
    """
    entry = _compiled.get((chunk, key))
    if entry is None:
        entry = _compiled[(chunk, key)] = _compile(chunk, args, plan)
    chunk_entry, loop_entry, pointer, args_type, plan_type = entry
    if CHECK_ARGUMENT_TYPES and (numba.typeof(args) != args_type
                                 or numba.typeof(plan) != plan_type):
        raise TypeError(f"{chunk.__name__}: arguments {numba.typeof(args)} and plan "
                        f"{numba.typeof(plan)} do not match the compiled {args_type} and "
                        f"{plan_type} (key {key!r})")
    if n_threads == 1:
        chunk_entry(args, plan, 0, 1)
    else:
        loop_entry(pointer, args, plan, n_threads)
