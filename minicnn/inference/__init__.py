"""Inference as one compiled call per batch: a model's eval-mode forward, planned once.

>>> from minicnn import inference, models
>>> net = models.build("mnist-cnn", 1, 10, rng=0)
>>> logits = inference.forward(net, images)          # doctest: +SKIP
>>> print(inference.plan_for(net, (1, 28, 28)))      # doctest: +SKIP

Calling a model layer by layer from Python costs little at batch 64 and much of the time at
batch 1: a small network's arithmetic for one image takes tens of microseconds, the Python,
argument checks and thread-pool wake-ups between its ten layers take hundreds. :func:`forward`
runs the whole network in one compiled call instead (:mod:`minicnn.kernels.network`), from a
plan made once per model and input shape (:mod:`minicnn.inference.plan`, the place to read how
the layers become steps).

What it promises:

- the eval-mode forward: batch norm with its running statistics, dropout the identity, the
  model's ``training`` flag untouched (nothing is cached for a backward);
- the same numbers as ``model.eval(); model(x)`` to float32 rounding (the plan's GEMMs sum in
  another order than the fused one-pool kernels);
- live weights: an optimiser step, ``load_state_dict`` or an edit of ``layer.weight.data``
  between calls is seen by the next call (the plan reads the arrays themselves; where one is
  *replaced*, it is looked up again);
- bad input is refused by the model's own first layer, with its usual message, before any
  compiled code runs;
- a model it cannot plan (a layer the plan has no step for, float64 weights, a non-numba
  backend) runs layer by layer, and :func:`plan_for` says why (``plan.fallback``); an
  unsupported *layer* also warns once per model.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import NamedTuple

import numba
import numpy as np
from numba import typed

from .. import nn
from ..kernels import network as _network
from ..kernels import threads as _threads
from . import plan as _plan
from .plan import NetworkPlan, build

__all__ = ["forward", "plan_for", "NetworkPlan", "build", "GROUP_BYTES", "PLAN_MAX_BATCH"]

#: A thread carries this many bytes of one group's activations and unrolled matrices through
#: the network at a time (how many samples that is depends on the model): about its share of
#: the L2 cache.
GROUP_BYTES = 1 << 20


class _Prepared(NamedTuple):
    plan: NetworkPlan
    program: np.ndarray       # STEP_DTYPE records, one per step
    arrays: list              # the arrays last read from the tensor sources
    tensors: typed.List       # 1-D views of them, as the kernel takes them


def _read_sources(plan: NetworkPlan) -> list:
    arrays = []
    for module, name in plan.tensor_sources:
        value = getattr(module, name)
        arrays.append(value.data if isinstance(value, nn.Parameter) else value)
    return arrays


def _views(arrays: list) -> typed.List | None:
    """1-D views (never copies) of ``arrays``, or ``None`` if one is not contiguous float32."""
    views = typed.List()
    for array in arrays:
        if array.dtype != np.float32 or not array.flags.c_contiguous:
            return None
        views.append(array.reshape(-1))
    return views


def _signature(model: nn.Module) -> tuple:
    """What a plan depends on beyond the input shape: which layers, in which order (walked
    through the modules' child tables directly: ``model.modules()`` builds every name, three
    times slower, and this runs on every call)."""
    found, stack = [], [model]
    while stack:
        module = stack.pop()
        found.append(id(module))
        stack.extend(module._modules.values())
    return tuple(found)


def plan_for(model: nn.Module, input_shape, softmax: bool = False) -> NetworkPlan:
    """The plan :func:`forward` uses for ``model`` on inputs of shape ``(N, *input_shape)``
    (made on first use and kept on the model; a model whose layers change gets a new one)."""
    return _prepared(model, tuple(int(s) for s in input_shape), softmax).plan


#: Each model's plans, beside the model rather than in it: what a plan holds (a typed list
#: of views, scratch rows) cannot be copied or pickled, and ``copy.deepcopy(model)`` must
#: keep working. Entries go when their model does.
_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _prepared(model: nn.Module, input_shape: tuple, softmax: bool) -> _Prepared:
    cache = _PLANS.get(model)
    if cache is None:
        cache = _PLANS[model] = {}
    signature = _signature(model)
    if cache.get("signature") != signature:
        cache.clear()
        cache["signature"] = signature
    key = (input_shape, softmax)
    prepared = cache.get(key)
    if prepared is None:
        plan = build(model, input_shape, softmax=softmax)
        if plan.fallback and plan.warn:
            warnings.warn(f"minicnn.inference: {plan.fallback}; running layer by layer",
                          RuntimeWarning, stacklevel=3)
        program = None if plan.fallback else plan.program()
        prepared = _Prepared(plan, program, [], typed.List.empty_list(numba.float32[::1]))
        cache[key] = prepared
    if not prepared.plan.fallback:
        arrays = _read_sources(prepared.plan)
        if len(arrays) != len(prepared.arrays) or any(
                a is not b for a, b in zip(arrays, prepared.arrays)):
            views = _views(arrays)
            if views is None:
                plan = NetworkPlan(input_shape=input_shape,
                                   fallback="a parameter is no longer contiguous float32")
                prepared = cache[key] = _Prepared(plan, None, [], prepared.tensors)
            else:
                prepared = cache[key] = _Prepared(prepared.plan, prepared.program, arrays,
                                                  views)
    return prepared


def _scratch(prepared: _Prepared, n_threads: int, n: int):
    """The kernel's :class:`~minicnn.kernels.network.Arena` and the threads' scratch rows for
    a batch of ``n`` on ``n_threads`` threads (kept on the plan and reused while the batch's
    shape stays the same): one per thread, then one whose row buffers hold the batch's rows
    after the flatten (:func:`~minicnn.kernels.network.run_thread`; what a row leaves unused
    is never touched, and so never takes memory)."""
    plan = prepared.plan
    groups, group = grouping(plan, n, n_threads)
    arena = _network.Arena(buffers=_plan.BUFFERS, buffer_size=plan.activation_size * group,
                           cols_size=plan.cols_size * group,
                           conv_out_size=plan.conv_out_size * group,
                           rows_size=plan.rows_features * n,
                           fixed_size=plan.fixed_size, group=group, groups=groups,
                           rows_from=plan.rows_from)
    size = (arena.buffers * (arena.buffer_size + arena.rows_size) + arena.cols_size
            + arena.conv_out_size + arena.fixed_size)
    store = plan.__dict__.setdefault("_scratch", {})
    scratch = store.get((n_threads, size))
    if scratch is None:
        store.clear()
        scratch = store[(n_threads, size)] = np.empty((n_threads + 1, size), dtype=np.float32)
    return arena, scratch


def grouping(plan: NetworkPlan, n: int, n_threads: int) -> tuple[int, int]:
    """``(groups, group)``: a batch of ``n`` on ``n_threads`` threads is cut into ``groups``
    groups of at most ``group`` samples, sizes differing by at most one (27 samples as 14 +
    13, not 16 + 11: a small group pays each step's fixed costs for a few samples), a
    multiple of ``n_threads`` groups where the batch allows (so that threads of equal speed
    finish together). A group is as many samples as fit in :data:`GROUP_BYTES` or the plan's
    ``min_group`` (the chunk an F(4x4, 3x3) step's GEMMs want), whichever is more, at least
    one and at most a thread's even share of the batch.

    ResNet-20's activations hold 2 samples in 1 MiB; its 64-channel F(4x4, 3x3) steps on 2
    samples' 12 tiles ran slower than F(2x2, 3x3), on 16 samples' 96 tiles 20 % faster (one
    thread, batch 64, on a 2-core AMD EPYC), and the whole network no slower elsewhere for the
    larger group (its activations are in L3 either way); 8 samples' 48 tiles as fast again."""
    per_sample = 4 * (_plan.BUFFERS * plan.activation_size + plan.cols_size
                      + plan.conv_out_size)
    share = -(-n // n_threads)
    largest = max(1, min(share, max(plan.min_group, GROUP_BYTES // max(per_sample, 1))))
    groups = min(n, n_threads * -(-share // largest))
    return groups, -(-n // groups)


_entries: list = []


def _entry_points(args: tuple) -> _network.Entries:
    """The compiled entry points (:func:`minicnn.kernels.network.entries`), called without
    Numba's per-call type dispatch (working out the types of every argument takes tens of
    microseconds, a good part of a batch of one's time). Every call passes the same types
    (a structured array of :data:`~minicnn.kernels.network.STEP_DTYPE`, float32
    C-contiguous arrays), so one set serves all."""
    if not _entries:
        _entries.append(_network.entries(tuple(numba.typeof(a) for a in args)))
    return _entries[0]


#: :func:`forward` runs the plan for batches up to this size and the layers (their one-pool
#: kernels, one parallel region per layer) above it, unless told. Measured on a 2-core AMD
#: EPYC (AVX2), median ms per call, plan against layers: at 2 threads LeNet-5 batch 16 0.37
#: against 0.63, 64 0.92 against 1.18, 256 3.44 against 3.61; MNIST CNN 16 1.12 against 1.67,
#: 64 4.06 against 4.76, 256 16.3 against 17.7; at one thread, batch 256, LeNet-5 6.99
#: against 6.93 and MNIST CNN 31.0 against 32.7. The plan's convolutions take one sample (or
#: one Winograd chunk) per GEMM, where the layers' kernels stack many samples into each, so
#: its lead shrinks as the batch grows and is gone by a few hundred samples.
PLAN_MAX_BATCH = 256


def forward(model: nn.Module, x: np.ndarray, softmax: bool = False,
            n_threads: int | None = None, use_plan: bool | None = None) -> np.ndarray:
    """``model``'s eval-mode forward on ``x``: one compiled call where the model can be planned
    and the batch is small (else layer by layer, in eval mode, restoring the model's mode).

    Parameters
    ----------
    model : Module
    x : ndarray (N, C, H, W)
        The model's input (normalised images), float32 for the planned path.
    softmax : bool
        Return probabilities instead of the last layer's outputs.
    n_threads : int, optional
        Threads to split the batch over (default: one per sample up to Numba's count).
    use_plan : bool, optional
        ``True``: the plan whatever the batch (where the model can be planned); ``False``:
        the layers; ``None`` (default): the plan up to :data:`PLAN_MAX_BATCH` samples.

    Returns
    -------
    ndarray (N, *plan.output_shape)
    """
    planned = (isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype == np.float32
               and x.shape[0] > 0 and use_plan is not False
               and (use_plan or x.shape[0] <= PLAN_MAX_BATCH))
    prepared = _prepared(model, x.shape[1:], softmax) if planned else None
    if prepared is None or prepared.plan.fallback:
        return _layer_by_layer(model, x, softmax)
    plan = prepared.plan
    x = np.ascontiguousarray(x)
    n = x.shape[0]
    threads = _threads.threads_for(n) if n_threads is None else max(1, min(n_threads, n))
    parts = None
    if n == 1 and (n_threads is None or n_threads > 1):
        # A batch of one: its big steps split over threads where the plan has some
        # (kernels.network.run_split), else one thread.
        parts, split_threads, hold_blas = _split_parts(prepared, n_threads)
        if parts is not None:
            threads = split_threads
    # What a call of this batch size needs besides x and out (scratch rows, the arena, the
    # compiled entry), made once: at batch 1 the Python around the call is most of its time.
    calls = plan.__dict__.setdefault("_calls", {})
    call = calls.get((n, threads))
    if call is None:
        arena, scratch = _scratch(prepared, threads, n)
        claims = np.zeros(1, dtype=np.int64)    # the next group to claim
        packed = plan.__dict__.get("_packed")
        if packed is None:  # NaN never equals a filter: the first call transforms them all
            packed = plan.__dict__["_packed"] = np.full(max(plan.packed_size, 1), np.nan,
                                                        dtype=np.float32)
        calls.clear()       # one batch shape at a time keeps one set of scratch rows
        call = calls[(n, threads)] = (arena, scratch, packed, claims,
                                      (n,) + plan.output_shape, int(np.prod(plan.output_shape)))
    arena, scratch, packed, claims, out_shape, out_size = call
    out = np.empty((n, out_size), dtype=np.float32)
    program, tensors = prepared.program, prepared.tensors
    entry = _entry_points((program, tensors, arena, x, out, scratch, packed))
    kernels = plan.__dict__.get("_kernels")
    if kernels is None:     # the addresses of the step kernels it calls (compiled on first use,
        # with the entries this call needs: together, on several cores where the cache is empty)
        kernels = plan.__dict__["_kernels"] = entry.kernels(program, split=parts is not None)
    entry.refresh(program, tensors, packed)
    if parts is not None:
        # Where a step calls BLAS, OpenBLAS's own threads and the region's waiting thread on
        # the same cores made one ResNet-20 call take 16 ms (p99 128) instead of 1.9: BLAS is
        # held at this thread only.
        with (_threads.blas_single_threaded() if hold_blas else contextlib.nullcontext()):
            entry.split()(program, parts, kernels, tensors, arena, x, out, scratch, packed,
                          threads)
        return out.reshape(out_shape)
    claims[0] = 0           # no group taken yet
    if threads == 1:
        # One caller of BLAS: it may use its own threads as it likes (holding it at one and
        # back costs 6-9 us, a tenth of a small network's batch of one).
        entry.one_thread(program, kernels, tensors, arena, x, out, scratch, packed, claims,
                         _network.WHOLE, 0, 1)
    else:
        with _threads.blas_single_threaded():       # each Numba thread calls BLAS itself
            entry.threads(entry.thread_pointer, program, kernels, tensors, arena, x, out,
                          scratch, packed, claims, threads)
    return out.reshape(out_shape)


def _split_parts(prepared: _Prepared, n_threads: int | None):
    """``(parts, threads, hold_blas)`` for a batch of one split over threads
    (:func:`minicnn.kernels.network.split_parts`; ``hold_blas``: a step calls BLAS, which must
    then stay on the calling thread), or ``(None, 1, False)`` where the plan has no step worth
    splitting or there is one thread. Kept on the plan, per thread count."""
    available = numba.get_num_threads()
    threads = available if n_threads is None else min(n_threads, available)
    if threads < 2:
        return None, 1, False
    store = prepared.plan.__dict__.setdefault("_parts", {})
    if threads not in store:
        parts = _network.split_parts(prepared.program, threads)
        if (parts["out_last"] != _network.NONE).any():
            store[threads] = (parts, threads, _network.calls_blas(prepared.program))
        else:
            store[threads] = (None, 1, False)
    return store[threads]


def _layer_by_layer(model: nn.Module, x, softmax: bool) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        y = model(x)
    finally:
        model.train(was_training)
    if softmax:
        from ..nn.functional import softmax as _softmax

        y = _softmax(y, axis=1)
    return y
