"""``Conv2d``: the layer; the arithmetic lives in the kernel backends (:mod:`minicnn.kernels`)."""

from __future__ import annotations

import numpy as np

from .. import init, kernels
from ..kernels.geometry import output_size
from ._checks import as_dtype, check_input, pair
from .module import BackendContext, Module, Parameter


class Conv2d(Module):
    """2-D convolution (cross-correlation) over NCHW images, as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), ``"same"`` or ``"valid"``
        ``"same"`` keeps H and W (stride 1 only); an even total pad puts the extra row/column
        at the bottom/right, as PyTorch does.
    groups : int
        Split channels into ``groups`` independent convolutions; ``groups == in_channels`` is a
        depthwise convolution.
    bias : bool
    backend : {"reference", "im2col", "numba"} or None
        Kernel implementation; ``None`` follows the process-wide default at each call.
    rng : numpy.random.Generator, int or None
        Source of the initial weights (see :mod:`minicnn.init`).
    dtype : float32 (default) or float64

    Shapes
    ------
    input ``(N, in_channels, H, W)`` -> output ``(N, out_channels, H_out, W_out)`` with
    ``H_out = floor((H + pad_top + pad_bottom - dilation*(kH - 1) - 1) / stride) + 1``.
    ``weight``: ``(out_channels, in_channels // groups, kH, kW)``; ``bias``: ``(out_channels,)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, backend: str | None = None,
                 rng=None, dtype=np.float32):
        super().__init__()
        name = "Conv2d"
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide both in_channels="
                             f"{in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, name, "kernel_size")
        self.stride = pair(stride, name, "stride")
        self.dilation = pair(dilation, name, "dilation")
        self.padding = padding
        self._pads = self._resolve_padding(padding)
        if backend is not None:
            kernels.get(backend)  # fail now, not at the first forward, on a typo
        self.backend = backend

        weight, bias_value = init.default_weight_and_bias(
            (out_channels, in_channels // groups, *self.kernel_size),
            out_channels if bias else None, init.resolve_rng(rng), dtype)
        self.weight = Parameter(weight)
        self.bias = Parameter(bias_value) if bias else None
        self._ctx = None

    def _resolve_padding(self, padding) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) from PyTorch's padding argument."""
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' needs stride 1, got stride {self.stride}")
            pads = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        if isinstance(padding, str):
            raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', "
                             f"got {padding!r}")
        ph, pw = pair(padding, "Conv2d", "padding", minimum=0)
        return (ph, ph, pw, pw)

    def output_shape(self, input_shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The output shape for an input of ``input_shape`` (N, C, H, W)."""
        n, _, h, w = input_shape
        top, bottom, left, right = self._pads
        return (n, self.out_channels,
                output_size(h, self.kernel_size[0], self.stride[0], top, bottom, self.dilation[0]),
                output_size(w, self.kernel_size[1], self.stride[1], left, right, self.dilation[1]))

    def _prepare(self, x):
        """Check ``x`` and pick the kernels: ``(x, backend name, weight, bias)``, the weights in
        ``x``'s dtype. Raises before any state changes."""
        x = check_input("Conv2d", x, 4, self.in_channels)
        top, bottom, left, right = self._pads
        padded = (x.shape[2] + top + bottom, x.shape[3] + left + right)
        span = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
        if padded[0] < span[0] or padded[1] < span[1]:
            raise ValueError(
                f"Conv2d: kernel {self.kernel_size} (dilation {self.dilation}, effective "
                f"{span}) is larger than the padded input {padded} (input {x.shape[2:]})")
        backend_name = self.backend or kernels.get_default_backend()
        weight = as_dtype(self.weight.data, x.dtype)
        bias = None if self.bias is None else as_dtype(self.bias.data, x.dtype)
        return x, backend_name, weight, bias

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, backend_name, weight, bias = self._prepare(x)
        y, ctx = kernels.get(backend_name).conv2d_forward(x, weight, bias, self.stride,
                                                          self._pads, self.dilation,
                                                          self.groups)
        self._ctx = BackendContext(backend_name, ctx)
        return self._output(y)

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Accumulate ``weight.grad`` (and ``bias.grad``); return ``dx`` (``None`` when
        ``need_input_grad`` is False, which skips the most expensive product)."""
        dy = self._check_dy(dy, self._ctx)
        dx, dweight, dbias = kernels.get(self._ctx.backend).conv2d_backward(dy, self._ctx.ctx,
                                                                            need_input_grad)
        self._accumulate(dweight, dbias)
        return dx

    def _accumulate(self, dweight: np.ndarray, dbias: np.ndarray | None) -> None:
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding not in (0, (0, 0)):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.backend is not None:
            text += f", backend={self.backend!r}"
        return text
