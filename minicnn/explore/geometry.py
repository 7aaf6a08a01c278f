"""Receptive fields: which input pixels an output pixel of a layer can see.

A convolution or pooling layer with kernel ``k``, stride ``s``, padding ``p`` (before) and
dilation ``d`` computes output row ``y`` from input rows ``y*s - p`` to ``y*s - p + d*(k-1)``;
a range of output rows ``[lo, hi]`` therefore reads input rows ``[lo*s - p, hi*s - p +
d*(k-1)]``. Walking that rule back through every earlier layer gives the receptive field on
the network's input. Rows and columns are independent, so everything here works on one axis at
a time; ranges are inclusive and may reach into the padding (below 0 or past the edge) until
:func:`clip` cuts them to the image.
"""

from __future__ import annotations

import math

from .. import nn

#: Layers that change no pixel's position (element-wise or per-channel).
POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.BatchNorm2d)


def _window(lo: int, hi: int, kernel: int, stride: int, pad: int, dilation: int = 1):
    return lo * stride - pad, hi * stride - pad + dilation * (kernel - 1)


def input_range(layer: nn.Module, lo: int, hi: int, axis: int, in_size: int) -> tuple[int, int]:
    """The input rows (``axis`` 0) or columns (``axis`` 1) that output ``[lo, hi]`` reads.

    Parameters
    ----------
    layer : Module
        Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, a pointwise layer, a BasicBlock or a
        Sequential of these.
    lo, hi : int
        Inclusive range of output positions along ``axis``.
    axis : 0 or 1
        0 for rows (height), 1 for columns (width).
    in_size : int
        The layer's input size along ``axis`` (adaptive pooling depends on it).

    Returns
    -------
    (int, int)
        Inclusive input range, unclipped (it may include padding).

    Raises
    ------
    TypeError
        For a layer whose spatial mapping is unknown here.
    """
    if isinstance(layer, nn.Conv2d):
        return _window(lo, hi, layer.kernel_size[axis], layer.stride[axis],
                       layer._pads[2 * axis], layer.dilation[axis])
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return _window(lo, hi, layer.kernel_size[axis], layer.stride[axis], layer.padding[axis])
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        out = layer.output_size[axis]
        # Output i averages input [floor(i*size/out), ceil((i+1)*size/out)) (as PyTorch).
        return lo * in_size // out, math.ceil((hi + 1) * in_size / out) - 1
    if isinstance(layer, POINTWISE):
        return lo, hi
    if isinstance(layer, nn.BasicBlock):
        # The body (two 3x3 convolutions) sees at least what the 1x1 shortcut sees.
        mid = layer.conv1.output_shape((1, layer.conv1.in_channels, in_size, in_size))[2 + axis]
        lo, hi = input_range(layer.conv2, lo, hi, axis, mid)
        return input_range(layer.conv1, lo, hi, axis, in_size)
    if isinstance(layer, nn.Sequential):
        sizes = [in_size]
        for child in list(layer)[:-1]:
            sizes.append(_output_size(child, sizes[-1], axis))
        for child, size in zip(reversed(list(layer)), reversed(sizes)):
            lo, hi = input_range(child, lo, hi, axis, size)
        return lo, hi
    raise TypeError(f"no receptive field rule for {type(layer).__name__}")


def _output_size(layer: nn.Module, in_size: int, axis: int) -> int:
    """Output size along ``axis`` of a spatial layer (for nested Sequentials)."""
    if isinstance(layer, nn.Conv2d):
        return layer.output_shape((1, layer.in_channels, in_size, in_size))[2 + axis]
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = layer.kernel_size[axis], layer.stride[axis], layer.padding[axis]
        return (in_size + 2 * p - k) // s + 1
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return layer.output_size[axis]
    if isinstance(layer, nn.BasicBlock):
        return _output_size(layer.conv1, in_size, axis)
    if isinstance(layer, POINTWISE):
        return in_size
    raise TypeError(f"no receptive field rule for {type(layer).__name__}")


def clip(lo: int, hi: int, size: int) -> tuple[int, int]:
    """``[lo, hi]`` cut to ``[0, size - 1]`` (the part that is not padding)."""
    return max(lo, 0), min(hi, size - 1)


def receptive_field(layers, index: int, y: int, x: int, input_sizes) -> dict:
    """The box that output pixel ``(y, x)`` of ``layers[index]`` reads, on every earlier input.

    Parameters
    ----------
    layers : list of Module
        The network's layers in order.
    index : int
        The layer whose output pixel is asked about.
    y, x : int
        The output pixel.
    input_sizes : list of (H, W)
        ``input_sizes[i]`` is the spatial size of ``layers[i]``'s input.

    Returns
    -------
    dict
        ``boxes[i] = (top, bottom, left, right)`` (inclusive, clipped to the image) on the input
        of ``layers[i]`` for every ``i <= index``; ``boxes[0]`` is on the network's input.
        ``unclipped`` is the box on the layer's own input before clipping (it shows padding).
    """
    rows, cols = (y, y), (x, x)
    boxes: dict[int, tuple[int, int, int, int]] = {}
    unclipped = None
    for i in range(index, -1, -1):
        height, width = input_sizes[i]
        rows = input_range(layers[i], *rows, 0, height)
        cols = input_range(layers[i], *cols, 1, width)
        if i == index:
            unclipped = (*rows, *cols)
        rows, cols = clip(*rows, height), clip(*cols, width)
        boxes[i] = (*rows, *cols)
    return {"boxes": boxes, "unclipped": unclipped}
