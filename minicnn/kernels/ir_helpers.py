"""Small pieces of LLVM IR shared by the register-block intrinsics.

:mod:`minicnn.kernels.direct_blocks`, :mod:`~minicnn.kernels.winograd_blocks`,
:mod:`~minicnn.kernels.int8_blocks` and :mod:`~minicnn.kernels.int8_positions` write their
inner loops as LLVM vector code (``llvmlite.ir``) inside Numba intrinsics; these are the
steps they all take: a value broadcast to every lane, accumulators that LLVM keeps in
registers, Python's ``max`` on vectors, and the loop over a convolution's taps.
"""

from __future__ import annotations

import contextlib

from llvmlite import ir
from numba.core import cgutils

_I32 = ir.IntType(32)


def splat(builder, value, lanes: int):
    """A vector of ``lanes`` copies of the scalar ``value`` (``insertelement`` +
    ``shufflevector``, which the x86 backend turns into one broadcast)."""
    vector = ir.VectorType(value.type, lanes)
    undefined = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undefined, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(first, undefined,
                                  ir.Constant(ir.VectorType(_I32, lanes),
                                              [ir.Constant(_I32, 0)] * lanes))


def load_vector(builder, base, at, vector):
    """The ``vector`` of floats at element ``at`` of the array whose data pointer is ``base``
    (4-byte aligned only: the blocks' rows start anywhere)."""
    value = builder.load(builder.bitcast(builder.gep(base, [at]), vector.as_pointer()))
    value.align = 4
    return value


def store_vector(builder, value, base, at):
    """Store the vector ``value`` at element ``at`` of the array whose data pointer is
    ``base`` (4-byte aligned only)."""
    store = builder.store(value, builder.bitcast(builder.gep(base, [at]),
                                                 value.type.as_pointer()))
    store.align = 4


def store_positions(builder, values, base, at, stride, first: int, column):
    """Store ``values[k]`` (vectors) at element ``at + (first + k) * stride + column`` of the
    array whose data pointer is ``base``: consecutive positions ξ of a transformed tile, each
    in its own row of ``stride`` elements (a Winograd input transform's output)."""
    i64 = ir.IntType(64)
    for k, value in enumerate(values):
        where = builder.add(builder.add(at, builder.mul(stride, ir.Constant(i64, first + k))),
                            column)
        store_vector(builder, value, base, where)


def zeroed_slots(builder, vector, count: int) -> list:
    """``count`` stack slots of type ``vector``, zeroed: the accumulators of a block, which
    LLVM's mem2reg promotes to registers."""
    slots = []
    for _ in range(count):
        slot = cgutils.alloca_once(builder, vector)
        builder.store(ir.Constant(vector, None), slot)
        slots.append(slot)
    return slots


def python_max(builder, a, b):
    """Python's ``max(a, b)`` on float vectors, lane by lane: ``b`` where ``b > a``, else
    ``a`` (as Numba compiles ``max``, so that a block pools to the same bits as a loop)."""
    return builder.select(builder.fcmp_ordered(">", b, a), b, a)


@contextlib.contextmanager
def for_each_tap(builder, base, c_in, kh, kw, size, pitch):
    """Loops over a convolution's taps ``(c, i, j)`` in that order, for the body written
    inside the ``with``: yields ``(at, tap)``, the tap's offset ``base + c * size + i * pitch
    + j`` in the padded planes and its index ``(c * kh + i) * kw + j`` (all int64 values)."""
    i64 = ir.IntType(64)
    counter = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
    with cgutils.for_range(builder, c_in) as channel:
        plane = builder.add(base, builder.mul(channel.index, size))
        with cgutils.for_range(builder, kh) as row:
            start = builder.add(plane, builder.mul(row.index, pitch))
            with cgutils.for_range(builder, kw) as column:
                tap = builder.load(counter)
                yield builder.add(start, column.index), tap
                builder.store(builder.add(tap, ir.Constant(i64, 1)), counter)


def splat_pair(builder, word):
    """A pair of int16 read as one 32-bit ``word``, broadcast to 8 lanes and sign-extended:
    16 int32 lanes ``(lo, hi, lo, hi, ...)``, the operand :func:`multiply_add_pairs` takes."""
    narrow = ir.VectorType(ir.IntType(16), 16)
    return builder.sext(builder.bitcast(splat(builder, word, 8), narrow),
                        ir.VectorType(_I32, 16))


def multiply_add_pairs(builder, a, b):
    """``a * b`` lane by lane (16 int32 lanes holding sign-extended int16) and each even lane
    added to the odd one after it: 8 int32 lanes, what the x86 backend emits as one
    ``vpmaddwd``."""
    full = ir.VectorType(_I32, 16)
    undefined = ir.Constant(full, ir.Undefined)
    product = builder.mul(a, b, flags=["nsw"])
    evens = ir.Constant(ir.VectorType(_I32, 8), [ir.Constant(_I32, 2 * i) for i in range(8)])
    odds = ir.Constant(ir.VectorType(_I32, 8), [ir.Constant(_I32, 2 * i + 1) for i in range(8)])
    return builder.add(builder.shuffle_vector(product, undefined, evens),
                       builder.shuffle_vector(product, undefined, odds))
