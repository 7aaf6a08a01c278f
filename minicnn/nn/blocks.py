"""Composite blocks: the residual ``BasicBlock`` that small ResNets are built from."""

from __future__ import annotations

import numpy as np

from .activation import ReLU
from .conv import Conv2d
from .module import Module
from .sequential import Sequential
from .norm import BatchNorm2d


class BasicBlock(Module):
    """ResNet's basic residual block, with torchvision's attribute names (so state dicts move
    between the two)::

        out = relu( bn2(conv2( relu(bn1(conv1(x))) )) + shortcut(x) )

    ``shortcut`` is the identity, or ``downsample = Sequential(Conv2d 1x1 stride s, BatchNorm2d)``
    when the stride or the channel count changes.

    Backward: the gradient reaching ``out`` goes through the final ReLU and then splits: one copy
    back through the body, one through the shortcut; the two *add* at ``x``.

    In training on the numba backend, each batch norm and what follows it (``bn1`` and the
    ReLU; ``bn2``, the add and the final ReLU) run as one pass of the batch-norm kernel, and
    ``bn1``'s backward takes the ReLU's in the same pass
    (:meth:`~minicnn.nn.BatchNorm2d._fused_forward`): the forward's values bit for bit, the
    backward's sums maybe in another order (float32 rounding), each layer keeping what its own
    forward would. Only where nothing can tell: the exact classes
    ``BatchNorm2d`` and ``ReLU`` with their own ``forward`` and ``backward`` (code that
    replaces them on a layer, as :func:`minicnn.models.profile` does, sees every call), and
    ``fuse`` left True.

    Shapes
    ------
    ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = 1
    #: Run batch norm + (add +) ReLU as one pass where possible (see above).
    fuse = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 backend: str | None = None, rng=None, dtype=np.float32):
        super().__init__()
        conv = dict(bias=False, backend=backend, rng=rng, dtype=dtype)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, **conv)
        self.bn1 = BatchNorm2d(out_channels, dtype=dtype)
        self.relu = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, **conv)
        self.bn2 = BatchNorm2d(out_channels, dtype=dtype)
        self.relu_out = ReLU()
        if stride != 1 or in_channels != out_channels:
            self.downsample = Sequential(
                Conv2d(in_channels, out_channels, 1, stride=stride, **conv),
                BatchNorm2d(out_channels, dtype=dtype))
        else:
            self.downsample = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        fuse = self._fusable()
        z = self.conv1(x)
        h = self.bn1._fused_forward(z, None, self.relu) if fuse else None
        self._relu_fused = h is not None
        if h is None:
            h = self.relu(self.bn1(z))
        z = self.conv2(h)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn2._fused_forward(z, shortcut, self.relu_out) if fuse else None
        if out is None:
            out = self.relu_out(self.bn2(z) + shortcut)
        return self._output(out)

    def _fusable(self) -> bool:
        """Whether the batch norms and ReLUs are plain enough to fuse (see the class doc)."""
        return self.fuse and self.training and all(
            type(layer) is cls and "forward" not in vars(layer)
            and "backward" not in vars(layer)
            for layer, cls in ((self.bn1, BatchNorm2d), (self.bn2, BatchNorm2d),
                               (self.relu, ReLU), (self.relu_out, ReLU))) and all(
            relu.backend in (None, "numba") for relu in (self.relu, self.relu_out))

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        dy = self._check_dy(dy)
        d_sum = self.relu_out.backward(dy)
        d_body = self.bn2.backward(d_sum)
        d_body = self.conv2.backward(d_body)
        if getattr(self, "_relu_fused", False):
            d_body = self.bn1._backward_through_relu(d_body, self.relu)
        else:
            d_body = self.bn1.backward(self.relu.backward(d_body))
        dx = self.conv1.backward(d_body, need_input_grad)
        d_short = d_sum if self.downsample is None else self.downsample.backward(
            d_sum, need_input_grad)
        if not need_input_grad:
            return None
        # dx is conv1's own new array: add into it (one pass, no new array of the input's size)
        return np.add(dx, d_short, out=dx)
