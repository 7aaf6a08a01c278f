"""Ready-made networks and a per-layer summary (output shape, parameters, FLOPs).

Every builder takes the input channels, the number of classes, an optional ``backend`` for the
convolution and pooling kernels, and ``rng`` (a Generator or int seed) for the initial weights.

>>> from minicnn import models
>>> net = models.build("lenet5", in_channels=1, num_classes=10, rng=0)
>>> models.summary(net, (1, 28, 28))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import init
from . import nn


def lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
           backend: str | None = None, rng=None) -> nn.Sequential:
    """LeNet-5 (LeCun et al., 1998) with today's ReLU and max pooling.

    conv 5x5 (6, padding 2 on 28x28 so the first feature map is 28x28 as in the paper's 32x32
    input) -> pool -> conv 5x5 (16) -> pool -> fc 120 -> fc 84 -> fc ``num_classes``.
    """
    rng = init.resolve_rng(rng)
    pad = 2 if image_size == 28 else 0
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad, backend=backend, rng=rng),
        nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(6, 16, 5, backend=backend, rng=rng), nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120, rng=rng, backend=backend),
        nn.ReLU(backend=backend),
        nn.Linear(120, 84, rng=rng, backend=backend), nn.ReLU(backend=backend),
        nn.Linear(84, num_classes, rng=rng, backend=backend))


def mnist_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
              backend: str | None = None, rng=None) -> nn.Sequential:
    """The classic MNIST CNN: conv3x3(32) -> pool -> conv3x3(64) -> pool -> fc128 -> fc."""
    rng = init.resolve_rng(rng)
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, backend=backend, rng=rng),
        nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(32, 64, 3, padding=1, backend=backend, rng=rng), nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Flatten(),
        nn.Linear(64 * side * side, 128, rng=rng, backend=backend),
        nn.ReLU(backend=backend),
        nn.Linear(128, num_classes, rng=rng, backend=backend))


def _conv_bn_relu(c_in, c_out, backend, rng, stride=1, groups=1, kernel=3):
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                      bias=False, backend=backend, rng=rng),
            nn.BatchNorm2d(c_out), nn.ReLU(backend=backend)]


def vgg_small(in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
              backend: str | None = None, rng=None) -> nn.Sequential:
    """A small VGG-style net: three stages of two 3x3 conv-BN-ReLU (32, 64, 128 channels), each
    followed by 2x2 max pooling, then global average pooling and a linear classifier."""
    rng = init.resolve_rng(rng)
    layers: list[nn.Module] = []
    c_in = in_channels
    for width in (32, 64, 128):
        layers += _conv_bn_relu(c_in, width, backend, rng)
        layers += _conv_bn_relu(width, width, backend, rng)
        layers.append(nn.MaxPool2d(2, backend=backend))
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c_in, num_classes, rng=rng, backend=backend)]
    return nn.Sequential(*layers)


def resnet_small(in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 blocks_per_stage: int = 1, backend: str | None = None,
                 rng=None) -> nn.Sequential:
    """A CIFAR-style ResNet (He et al., 2016): a 3x3 stem (16), three stages of
    ``BasicBlock``s (16, 32, 64 channels; stages 2 and 3 halve the resolution), global average
    pooling and a linear classifier. ``blocks_per_stage=3`` is ResNet-20."""
    rng = init.resolve_rng(rng)
    layers: list[nn.Module] = _conv_bn_relu(in_channels, 16, backend, rng)
    c_in = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(nn.BasicBlock(c_in, width, stride, backend=backend, rng=rng))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c_in, num_classes, rng=rng, backend=backend)]
    return nn.Sequential(*layers)


def resnet20(in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
             backend: str | None = None, rng=None) -> nn.Sequential:
    """ResNet-20 for CIFAR-10 (He et al., 2016, section 4.2): :func:`resnet_small` with three
    ``BasicBlock``s per stage (1 + 3 x 3 x 2 + 1 = 20 weighted layers, 0.27 M parameters)."""
    return resnet_small(in_channels, num_classes, image_size, blocks_per_stage=3,
                        backend=backend, rng=rng)


def separable_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                  backend: str | None = None, rng=None) -> nn.Sequential:
    """A MobileNet-style net of depthwise-separable convolutions: each block is a 3x3
    depthwise conv (``groups = channels``) then a 1x1 pointwise conv, both with BN and ReLU.
    At the same widths that is 8-9x fewer parameters and FLOPs than ordinary 3x3 convolutions,
    but not fewer FLOPs than the narrower MNIST CNN: its first blocks run at full resolution."""
    rng = init.resolve_rng(rng)
    layers: list[nn.Module] = _conv_bn_relu(in_channels, 32, backend, rng)
    c_in = 32
    for width, stride in ((64, 1), (128, 2), (128, 1), (256, 2)):
        layers += _conv_bn_relu(c_in, c_in, backend, rng, stride=stride, groups=c_in)
        layers += _conv_bn_relu(c_in, width, backend, rng, kernel=1)
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c_in, num_classes, rng=rng, backend=backend)]
    return nn.Sequential(*layers)


def tiny_detector(in_channels: int = 1, num_classes: int = 10, image_size: int = 96,
                  backend: str | None = None, rng=None, width: int = 16) -> nn.Sequential:
    """A single-shot grid detector (YOLOv2's box form with one prior per cell, see
    :mod:`minicnn.detection.head`).

    Four stages of a 3x3 conv, ReLU and 2x2 max pooling (16, 32, 64, 64 channels at the
    default ``width``; batch norm in the last two) take a 96x96 scene to a 6x6 grid of
    16-pixel cells; a 3x3 conv-BN-ReLU (128) mixes neighbouring cells, so that each cell
    sees 78x78 pixels around it (a whole 40-pixel digit), and a 1x1 conv predicts, per cell,
    objectness, box (4) and ``num_classes`` class logits: output ``(N, 5 + classes, 6, 6)``.

    The returned network carries ``stride`` (pixels per cell) and ``prior`` (the box size
    that ``tw = th = 0`` means, twice the stride) for the loss and the decoder.
    """
    if image_size % 16:
        raise ValueError(f"tiny-detector needs an input side divisible by 16, got {image_size}")
    rng = init.resolve_rng(rng)
    layers: list[nn.Module] = []
    c_in = in_channels
    for stage, c_out in enumerate((width, 2 * width, 4 * width, 4 * width)):
        if stage < 2:
            # No batch norm at the two large resolutions: there it cost half of a training
            # step (NumPy passes over 64x16x96x96 values) for little gain in convergence.
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, backend=backend, rng=rng),
                       nn.ReLU(backend=backend)]
        else:
            layers += _conv_bn_relu(c_in, c_out, backend, rng)
        layers.append(nn.MaxPool2d(2, backend=backend))
        c_in = c_out
    layers += _conv_bn_relu(c_in, 8 * width, backend, rng)
    layers.append(nn.Conv2d(8 * width, 5 + num_classes, 1, backend=backend, rng=rng))
    net = nn.Sequential(*layers)
    net.stride = 16
    net.prior = 32.0
    return net


MODELS = {
    "lenet5": lenet5,
    "mnist-cnn": mnist_cnn,
    "vgg-small": vgg_small,
    "resnet-small": resnet_small,
    "resnet20": resnet20,
    "separable-cnn": separable_cnn,
    "tiny-detector": tiny_detector,
}

#: Models that find objects (output a grid of boxes, train on scene data sets); the others
#: classify whole images.
DETECTION_MODELS = frozenset({"tiny-detector"})


def task_of(name: str) -> str:
    """``"detection"`` or ``"classification"``: what model ``name`` is for."""
    return "detection" if name in DETECTION_MODELS else "classification"


def build(name: str, in_channels: int, num_classes: int, image_size: int = 28,
          backend: str | None = None, rng=None) -> nn.Sequential:
    """Build a model from :data:`MODELS` by name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes,
                        image_size=image_size, backend=backend, rng=rng)


# --------------------------------------------------------------------------------------------
# Summary: shapes, parameters and FLOPs per layer
# --------------------------------------------------------------------------------------------
@dataclass
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    flops: int


def _layer_flops(layer: nn.Module, input_shape, output_shape) -> int:
    """Floating-point operations for one image (a multiply-add counts as 2)."""
    out_elems = int(np.prod(output_shape[1:]))
    if isinstance(layer, nn.Conv2d):
        per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
        return 2 * per_output * out_elems + (out_elems if layer.bias is not None else 0)
    if isinstance(layer, nn.Linear):
        return 2 * layer.in_features * layer.out_features + (
            layer.out_features if layer.bias is not None else 0)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return out_elems * layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return int(np.prod(input_shape[1:]))
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return 2 * out_elems
    if isinstance(layer, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Dropout)):
        return out_elems
    return 0


def profile(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """Run one zero image through ``model`` (in eval mode) and record every leaf layer.

    ``input_shape`` is ``(C, H, W)`` (no batch dimension).
    """
    records: list[LayerInfo] = []
    names = {id(module): name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if not m._modules]

    def wrap(layer):
        forward = layer.forward

        def recorded(x, *args):
            y = forward(x, *args)
            records.append(LayerInfo(
                names.get(id(layer), ""), type(layer).__name__, tuple(y.shape[1:]),
                sum(p.data.size for p in layer.parameters()),
                _layer_flops(layer, x.shape, y.shape)))
            return y
        return recorded

    was_training = model.training
    model.eval()
    try:
        for layer in leaves:
            object.__setattr__(layer, "forward", wrap(layer))
        model(np.zeros((1, *input_shape), dtype=np.float32))
    finally:
        for layer in leaves:
            object.__delattr__(layer, "forward")
        model.train(was_training)
    return records


def count_parameters(model: nn.Module) -> int:
    return sum(p.data.size for p in model.parameters())


def summary(model: nn.Module, input_shape: tuple[int, ...], print_fn=print) -> str:
    """Print (and return) a table: each layer's output shape, parameters and FLOPs per image."""
    rows = profile(model, input_shape)
    header = f"{'layer':<22} {'type':<18} {'output shape':<16} {'params':>10} {'FLOPs':>14}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(f"{r.name:<22} {r.kind:<18} {shape:<16} {r.parameters:>10,} {r.flops:>14,}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<58} {count_parameters(model):>10,} "
                 f"{sum(r.flops for r in rows):>14,}")
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text
