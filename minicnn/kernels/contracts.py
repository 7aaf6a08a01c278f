"""The named sizes and modes every fast convolution kernel shares, defined once.

The one-pool convolution (:mod:`minicnn.kernels.onepool`), its Winograd forward
(:mod:`minicnn.kernels.winograd`) and the depthwise kernels (:mod:`minicnn.kernels.depthwise`)
are *chunk kernels* (:mod:`minicnn.kernels.parallel`): compiled functions called as
``chunk(args, plan, thread, n_threads)``. Each family defines its own arguments record
``args`` (its arrays, flags and function pointers) beside its kernels; what they share lives
here, in a module none of them owns:

- :class:`ConvPlan`, the ``plan``: a convolution's geometry (kernel, stride, dilation,
  padding, padded and output sizes) and the shift path's stacked layout, as named ints.
  A chunk kernel reads ``plan.pitch``, never ``plan[15]``.
- :func:`conv_plan` and :func:`with_stacked_layout`, the only places those ints are computed.
- The epilogue / prologue modes: what the output pass does after the bias (:data:`PLAIN`,
  :data:`RELU`, :data:`RELU_MAXPOOL`, :data:`RELU_MAXPOOL_VALUES`), and how backward reads
  its gradient (:data:`PLAIN`, or through the fused pooling and ReLU: :data:`RELU_MAXPOOL`).

Why ``NamedTuple``: Numba compiles a named tuple of ints exactly as a plain tuple of ints (a
field read is the same machine code as an index), caches kernels that take one, and passes it
through a ``prange`` loop and a function pointer. It must stay *flat*: a parallel loop cannot
take a tuple nested in a tuple, so the plan is one record of ints, not a record of records.
"""

from __future__ import annotations

from typing import NamedTuple

from .geometry import output_size

#: Output pass modes (``args.epilogue``): the bias only; a ReLU after it; a ReLU and 2x2 max
#: pooling with stride 2 with the winners' positions (for a backward); the same pooling
#: without the positions (inference). Backward's ``args.prologue`` is :data:`PLAIN` or
#: :data:`RELU_MAXPOOL` (the gradient read through the pooling and the ReLU).
PLAIN, RELU, RELU_MAXPOOL, RELU_MAXPOOL_VALUES = 0, 1, 2, 3


class ConvPlan(NamedTuple):
    """Every size a convolution's chunk kernels need, as named ints.

    Padding is ``(top, bottom, left, right)`` (:mod:`minicnn.kernels.geometry`); the kernels
    need only its top and left, since the padded sizes end at the last row and column a
    window reads.
    """

    # -- the geometry, on every path (:func:`conv_plan`) --
    kh: int             #: kernel height
    kw: int             #: kernel width
    sh: int             #: stride along H
    sw: int             #: stride along W
    dh: int             #: dilation along H
    dw: int             #: dilation along W
    top: int            #: zero rows above the input
    left: int           #: zero columns left of the input
    padded_h: int       #: padded rows, up to the last one a window reads
    padded_w: int       #: padded columns, up to the last one a window reads
    out_h: int          #: output height
    out_w: int          #: output width
    # -- the shift path's stacked layout (:func:`with_stacked_layout`); zeros elsewhere --
    gap_v: int = 0      #: zero rows between stacked samples, ``max(top, bottom)``
    gap_h: int = 0      #: zero columns between rows, ``max(left, right)``
    block: int = 0      #: rows per stacked sample, ``H + gap_v``
    pitch: int = 0      #: values per stacked row, ``W + gap_h``
    channel_length: int = 0   #: values per channel of the stacked buffer
    row0: int = 0       #: row of the buffer that tap row 0 of output row 0 reads
    col0: int = 0       #: column of the buffer that tap column 0 of output column 0 reads
    group: int = 0      #: samples stacked per GEMM; 0 when there is no stacked layout

    @property
    def stacked(self) -> bool:
        """Whether the plan has a stacked layout (the shift path)."""
        return self.group > 0


def conv_plan(x_shape, weight_shape, stride, padding, dilation) -> ConvPlan:
    """The geometry of a convolution of an ``x_shape`` (N, C, H, W) input with
    ``weight_shape`` (C_out, C_in/groups, kH, kW) filters, ``stride`` and ``dilation`` pairs
    and ``padding`` (top, bottom, left, right); no stacked layout.

    Rows and columns of padding that no window reaches (a stride that does not divide evenly)
    are never read, so the padded sizes stop at the last one read (but cover the input)."""
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, padding
    height, width = x_shape[2], x_shape[3]
    kh, kw = weight_shape[2], weight_shape[3]
    out_h = output_size(height, kh, sh, top, bottom, dh)
    out_w = output_size(width, kw, sw, left, right, dw)
    padded_h = max((out_h - 1) * sh + (kh - 1) * dh + 1, top + height)
    padded_w = max((out_w - 1) * sw + (kw - 1) * dw + 1, left + width)
    return ConvPlan(*(int(v) for v in (kh, kw, sh, sw, dh, dw, top, left, padded_h, padded_w,
                                       out_h, out_w)))


def with_stacked_layout(plan: ConvPlan, x_shape, padding, group: int) -> ConvPlan | None:
    """``plan`` with the shift path's stacked layout for ``group`` samples per GEMM, or
    ``None`` where the layout cannot hold the output.

    Per channel, a thread's ``group`` samples are stacked into one zero-padded image: rows of
    ``pitch = W + gap_h`` values (the ``gap_h = max(left, right)`` zero columns at the start of
    each row are also the previous row's right padding) and samples of ``block = H + gap_v``
    rows (the ``gap_v = max(top, bottom)`` zero rows are shared the same way). Output ``(s,
    oh, ow)`` is grid position ``(s*block + oh) * pitch + ow`` and tap ``(i, j)`` reads the
    input at that position plus ``(row0 + i*dh) * pitch + col0 + j*dw``. Shared padding wastes
    fewer GEMM columns than a padded plane per sample (15x15 against 16x16 per 14x14 output
    for a 3x3 'same' convolution). It needs each sample's output to fit in its block:
    ``H_out <= block`` and ``W_out <= pitch``.
    """
    height, width = x_shape[2], x_shape[3]
    top, bottom, left, right = padding
    gap_v, gap_h = max(top, bottom), max(left, right)
    block, pitch = height + gap_v, width + gap_h
    if plan.out_h > block or plan.out_w > pitch:
        return None
    return plan._replace(gap_v=int(gap_v), gap_h=int(gap_h), block=int(block),
                         pitch=int(pitch), channel_length=int((gap_v + group * block) * pitch
                                                              + gap_h),
                         row0=int(gap_v - top), col0=int(gap_h - left), group=int(group))
