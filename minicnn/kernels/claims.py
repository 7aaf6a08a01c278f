"""Work handed out to threads as they ask for it: an atomic counter that compiled code claims
items from.

A parallel region that cuts its work into fixed shares (thread ``t`` takes items
``[t*n/T, (t+1)*n/T)``) finishes when its *slowest* thread does. On a machine whose cores are
shared (a cloud VM: its second vCPU ran a GEMM 35 % slower than the first, in stretches,
whenever both were busy) one share can take a third longer than the other while the faster
thread waits. Handing the items out one at a time instead, each thread claiming the next
unclaimed item when it finishes one, lets the faster thread take more of them; the call then
waits at most about one item for the slower thread.

A claim is one atomic add on a shared counter (``lock xadd`` on x86), a few nanoseconds against
the milliseconds an item of a network plan takes. Numba has no atomic operation of its own,
so :func:`claim` writes the LLVM instruction itself.

Only work whose result does not depend on which thread does it may be handed out this way:
an item's output goes to its own place. (A sum over items that each thread accumulates in a
partial of its own, as the training kernels' weight gradients do, would then be summed in an
order that changes from call to call; those keep fixed shares, so that training is
reproducible bit for bit.)
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def claim(typingctx, counters, index):
    """Atomically add 1 to ``counters[index]`` (an ``int64`` array) and return the value it
    had: the item this thread now owns (items are claimed in order; a value at or past the
    number of items means that none is left).

    Parameters
    ----------
    counters : int64 ndarray (1-D, C-contiguous)
    index : int
        Which counter (not bounds-checked: the caller owns ``counters``).

    Returns
    -------
    int64
    """
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64
            and counters.ndim == 1 and isinstance(index, types.Integer)):
        return None
    signature = types.int64(counters, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        at = context.cast(builder, args[1], signature.args[1], types.intp)
        pointer = cgutils.get_item_pointer(context, builder, array_type, array, [at])
        # "monotonic": the counter itself is all that must be atomic; what the items write
        # is published by the parallel region's end, which every thread passes.
        return builder.atomic_rmw("add", pointer, context.get_constant(types.int64, 1),
                                  "monotonic")

    return signature, codegen
