"""``Conv2d -> ReLU (-> MaxPool2d(2))`` run as one pass inside a :class:`~minicnn.nn.Sequential`.

Run one by one, the three layers make three passes over the convolution's output: the
convolution writes it, the ReLU reads it and writes a rectified copy, the pooling reads that
and writes a quarter of it; backward makes three more. On the ``numba`` backend the one-pool
convolution can do the ReLU and the pooling in its own output pass, on rows that are still in
cache, and their backward as it reads its gradient
(:func:`minicnn.kernels.onepool.conv2d_relu_forward`). A ReLU and a maximum only pick values,
so the numbers are the same bit for bit; tests compare the two ways on every output and
gradient.

Each layer stays a layer. After a fused forward every one of them holds exactly what its own
forward would have kept (the ReLU its output, the pooling its winners), so each one's
``backward`` still works on its own, and tools that run layers one at a time (``minicnn
explore``, :func:`minicnn.models.summary`) see the usual per-layer outputs.

A block is fused only where nothing can tell the difference: the exact classes ``Conv2d``,
``ReLU`` and ``MaxPool2d`` (a subclass may change ``forward``) with their own ``forward`` and
``backward`` (code that replaces them on a layer, as :func:`minicnn.models.profile` does to
record every layer's output, sees every call), all three on the ``numba`` backend, a
convolution the one-pool kernels run (ungrouped, float32 or float64), and for the pooling a
2x2 window with stride 2 and no padding over an output of at least 2x2. Anything else runs
layer by layer, as before. ``Sequential.fuse = False`` turns fusion off (to time
the difference, as tutorial 09 does).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .activation import ReLU
from .conv import Conv2d
from .module import BackendContext, Module
from .pool import MaxPool2d

_BACKEND = "numba"


def _plain(layer: Module | None, cls: type) -> bool:
    """``layer`` is exactly a ``cls``, with the class's own ``forward`` and ``backward`` (not
    replaced on the instance, as :func:`minicnn.models.profile` does to record each layer),
    on the numba backend."""
    return (type(layer) is cls and "forward" not in vars(layer)
            and "backward" not in vars(layer)
            and (layer.backend or kernels.get_default_backend()) == _BACKEND)


def _fusable_pool(layer: Module | None) -> bool:
    return (_plain(layer, MaxPool2d) and layer.kernel_size == (2, 2)
            and layer.stride == (2, 2) and layer.padding == (0, 0))


class FusedBlock:
    """What one fused forward of ``layers[first:last + 1]`` produced and backward needs."""

    def __init__(self, first: int, conv: Conv2d, relu: ReLU, pool: MaxPool2d | None,
                 y: np.ndarray, pooled: np.ndarray | None, conv_ctx, pool_ctx):
        self.first = first
        self.last = first + (2 if pool is not None else 1)
        self.layers = (conv, relu) if pool is None else (conv, relu, pool)
        self.y, self.pooled = y, pooled
        self.conv_ctx, self.pool_ctx = conv_ctx, pool_ctx

    @property
    def output(self) -> np.ndarray:
        return self.y if self.pooled is None else self.pooled

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """The block's backward in one pass (with pooling; without, the ReLU's mask first):
        accumulates the convolution's gradients and returns the gradient at the block's input
        (``None`` unless ``need_input_grad``). ``dy`` is checked against the block's output
        before anything changes."""
        conv, relu = self.layers[0], self.layers[1]
        if self.pooled is None:
            dy = relu._check_dy(dy, self.y)
        else:
            dy = self.layers[2]._check_dy(dy, self.pool_ctx)
        dx, dweight, dbias = kernels.get(_BACKEND).conv2d_relu_backward(
            dy, self.conv_ctx, self.y, self.pooled, self.pool_ctx, need_input_grad)
        conv._accumulate(dweight, dbias)
        return dx

    def matches(self, layers: list[Module]) -> bool:
        """Whether ``layers`` still hold this block's layers at its positions."""
        found = layers[self.first:self.last + 1]
        return len(found) == len(self.layers) and all(
            a is b for a, b in zip(found, self.layers))


def forward(layers: list[Module], first: int, x: np.ndarray) -> FusedBlock | None:
    """Run ``layers[first]`` and the ReLU (and pooling) after it as one fused block, or
    return ``None`` (having changed nothing) where they cannot be fused; the caller then runs
    ``layers[first]`` on its own. Bad input raises the convolution's usual errors."""
    conv = layers[first]
    relu = layers[first + 1] if first + 1 < len(layers) else None
    if not (_plain(conv, Conv2d) and _plain(relu, ReLU)):
        return None
    pool = layers[first + 2] if first + 2 < len(layers) else None
    x, _, weight, bias = conv._prepare(x)     # the backend is numba: _plain checked
    out_h, out_w = conv.output_shape(x.shape)[2:]
    if not (_fusable_pool(pool) and out_h >= 2 and out_w >= 2):
        pool = None
    # In eval mode the pooling skips its winners' positions, which only a backward needs;
    # if one comes, the pooling finds them from the ReLU's output (the same rule, same bits).
    fused = kernels.get(_BACKEND).conv2d_relu_forward(
        x, weight, bias, conv.stride, conv._pads, conv.dilation, conv.groups, pool is not None,
        winners=pool is None or pool.training)
    if fused is None:
        return None
    y, pooled, conv_ctx, pool_ctx = fused
    # Every layer keeps what its own forward would have kept.
    conv._ctx = BackendContext(_BACKEND, conv_ctx)
    conv._output(y)
    relu._remember(y)
    if pool is not None:
        pool._remember(_BACKEND, pool_ctx, pooled)
    return FusedBlock(first, conv, relu, pool, y, pooled, conv_ctx, pool_ctx)
