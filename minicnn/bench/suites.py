"""The benchmark suites: named layer shapes and models, with their FLOP and byte counts.

A :class:`LayerCase` is one layer at one shape (convolution, max/avg pooling or linear); a
:class:`ModelCase` is one network from :mod:`minicnn.models` at one batch size. A
:class:`Suite` bundles them. Shapes follow the real networks in :mod:`minicnn.models`
(LeNet-5 pads its first convolution by 2 on 28x28 inputs, so its feature maps are 28x28,
then 10x10 after the second convolution).

Counting conventions (stated once, used by every report):

- convolution forward: ``2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW`` FLOPs
  (one multiply-add = 2); backward with the input gradient: twice that (``dW`` and ``dx``);
  the bias is not counted.
- linear forward: ``2 * N * in * out``; backward: twice that.
- pooling: one operation per window element read (``N * C * H_out * W_out * kH * kW``)
  forward; backward ``N * C * H_out * W_out`` (max: one add per output) or the forward count
  (average). Pooling is memory-bound, so its FLOP rate is not compared with the GEMM peak.
- bytes: the least traffic an ideal kernel needs (read each input once, write each output
  once, float32 = 4 bytes), for an effective bandwidth in GB/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

FLOAT_BYTES = 4
LAYER_KINDS = ("conv", "maxpool", "avgpool", "linear")


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class LayerCase:
    """One layer at one input shape.

    Parameters
    ----------
    name : str
        Unique, e.g. ``"conv/mnist-cnn.conv2"``.
    kind : {"conv", "maxpool", "avgpool", "linear"}
    in_channels : int
        Channels (``in_features`` for ``linear``).
    size : int
        Square input side ``H = W`` (0 for ``linear``).
    out_channels : int
        Conv output channels (``out_features`` for ``linear``; unused for pooling).
    kernel, stride, padding, groups : int
        Square kernel, stride and symmetric padding; groups for convolutions.
    origin : str
        Where the shape comes from, for the reader ("LeNet-5 conv1").
    batch : int
    """

    name: str
    kind: str
    in_channels: int
    size: int = 0
    out_channels: int = 0
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    origin: str = ""
    batch: int = 64

    def __post_init__(self):
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"LayerCase {self.name}: unknown kind {self.kind!r}")

    # -- shapes -----------------------------------------------------------------------------
    @property
    def out_size(self) -> int:
        """Output side ``H_out = W_out`` (0 for linear)."""
        if self.kind == "linear":
            return 0
        return _out(self.size, self.kernel, self.stride, self.padding)

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.kind in ("maxpool", "avgpool") else self.out_channels

    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.batch, self.in_channels)
        return (self.batch, self.in_channels, self.size, self.size)

    def output_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.batch, self.out_channels)
        return (self.batch, self.output_channels, self.out_size, self.out_size)

    def weight_shape(self) -> tuple[int, ...] | None:
        if self.kind == "conv":
            return (self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel)
        if self.kind == "linear":
            return (self.out_channels, self.in_channels)
        return None

    # -- work -------------------------------------------------------------------------------
    @property
    def is_compute_bound(self) -> bool:
        """True for GEMM-like layers, whose FLOP rate is compared with the GEMM peak."""
        return self.kind in ("conv", "linear")

    def flops(self) -> tuple[int, int]:
        """(forward, backward) floating-point operations; see the module docstring."""
        n = self.batch
        if self.kind == "conv":
            per_output = (self.in_channels // self.groups) * self.kernel * self.kernel
            forward = 2 * n * self.out_channels * self.out_size ** 2 * per_output
            return forward, 2 * forward
        if self.kind == "linear":
            forward = 2 * n * self.in_channels * self.out_channels
            return forward, 2 * forward
        outputs = n * self.in_channels * self.out_size ** 2
        forward = outputs * self.kernel * self.kernel
        return forward, (outputs if self.kind == "maxpool" else forward)

    def bytes_moved(self) -> tuple[int, int]:
        """(forward, backward) minimal memory traffic in bytes (float32)."""
        x = _prod(self.input_shape())
        y = _prod(self.output_shape())
        w = _prod(self.weight_shape()) if self.weight_shape() else 0
        if self.kind in ("conv", "linear"):
            return FLOAT_BYTES * (x + w + y), FLOAT_BYTES * (y + x + w + x + w)
        return FLOAT_BYTES * (x + y), FLOAT_BYTES * (y + x)

    def describe(self) -> str:
        """A short shape description, e.g. ``"32->64 3x3 p1 @14x14"``."""
        if self.kind == "linear":
            return f"{self.in_channels}->{self.out_channels}"
        if self.kind == "conv":
            text = f"{self.in_channels}->{self.out_channels} "
        else:
            text = f"{self.in_channels}ch "
        text += f"{self.kernel}x{self.kernel}"
        if self.stride != 1 or self.kind != "conv":
            text += f" s{self.stride}"
        if self.padding:
            text += f" p{self.padding}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text + f" @{self.size}x{self.size}"


def _prod(shape) -> int:
    total = 1
    for s in shape:
        total *= int(s)
    return total


@dataclass(frozen=True)
class ModelCase:
    """A network from :data:`minicnn.models.MODELS` at one batch size.

    Parameters
    ----------
    model : str
        Key of :data:`minicnn.models.MODELS`.
    batch : int
    in_channels, image_size, num_classes : int
    """

    model: str
    batch: int = 64
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10

    @property
    def name(self) -> str:
        return self.model


@dataclass(frozen=True)
class Suite:
    """What one ``--suite`` runs."""

    name: str
    description: str
    layers: tuple[LayerCase, ...] = ()
    models: tuple[ModelCase, ...] = ()
    compile_default: bool = False
    notes: tuple[str, ...] = field(default=())
    #: How model steps are timed by default: "process" (each library alone in its own
    #: process) or "in-process" (every competitor in the harness's process, in turns).
    model_runs: str = "process"
    #: True: ``models`` are timed as whole training epochs (``minicnn train`` against a
    #: plain PyTorch script), not as single steps.
    epoch: bool = False
    #: True: ``models`` are timed at inference only, call by call (median and 99th
    #: percentile per call; ``--calls`` calls at batch 1, ``--repeats`` at larger batches).
    latency: bool = False

    def with_batch(self, batch: int | None) -> "Suite":
        """The same suite with every layer and model at ``batch`` (``None``: unchanged;
        duplicated model cases collapse into one)."""
        if batch is None:
            return self
        models: list[ModelCase] = []
        for case in self.models:
            case = replace(case, batch=batch)
            if case not in models:
                models.append(case)
        return replace(self, layers=tuple(replace(c, batch=batch) for c in self.layers),
                       models=tuple(models))


# ------------------------------------------------------------------------------------------------
# The shapes
# ------------------------------------------------------------------------------------------------
def _conv(name, c_in, c_out, k, size, stride=1, padding=0, groups=1, origin="", batch=64):
    return LayerCase(f"conv/{name}", "conv", c_in, size, c_out, k, stride, padding, groups,
                     origin, batch)


def _pool(name, kind, channels, size, k=2, stride=2, origin="", batch=64):
    return LayerCase(f"{kind}/{name}", kind, channels, size, 0, k, stride, 0, 1, origin, batch)


def _linear(name, f_in, f_out, origin="", batch=64):
    return LayerCase(f"linear/{name}", "linear", f_in, 0, f_out, origin=origin, batch=batch)


CONV = (
    _conv("lenet5.conv1", 1, 6, 5, 28, padding=2, origin="LeNet-5 conv1 (28x28, pad 2)"),
    _conv("lenet5.conv2", 6, 16, 5, 14, origin="LeNet-5 conv2"),
    _conv("mnist-cnn.conv1", 1, 32, 3, 28, padding=1, origin="MNIST CNN conv1"),
    _conv("mnist-cnn.conv2", 32, 64, 3, 14, padding=1, origin="MNIST CNN conv2"),
    _conv("cifar.conv1", 3, 64, 3, 32, padding=1, origin="CIFAR stem"),
    _conv("cifar.conv64", 64, 64, 3, 32, padding=1, origin="CIFAR 64-channel stage"),
    _conv("cifar.conv128", 128, 128, 3, 16, padding=1, origin="CIFAR 128-channel stage"),
    _conv("cifar.down", 64, 128, 3, 32, stride=2, padding=1,
          origin="CIFAR stride-2 downsampling"),
    _conv("separable.depthwise", 128, 128, 3, 14, padding=1, groups=128,
          origin="separable-cnn depthwise 3x3 (groups = channels)"),
    _conv("separable.pointwise", 64, 128, 1, 14, origin="separable-cnn pointwise 1x1"),
)

POOL = (
    _pool("lenet5.pool1", "maxpool", 6, 28, origin="LeNet-5 pool1"),
    _pool("lenet5.pool2", "maxpool", 16, 10, origin="LeNet-5 pool2"),
    _pool("mnist-cnn.pool1", "maxpool", 32, 28, origin="MNIST CNN pool1"),
    _pool("mnist-cnn.pool2", "maxpool", 64, 14, origin="MNIST CNN pool2"),
    _pool("mnist-cnn.pool1", "avgpool", 32, 28, origin="average pooling, MNIST CNN pool1 shape"),
    _pool("mnist-cnn.pool2", "avgpool", 64, 14, origin="average pooling, MNIST CNN pool2 shape"),
)

DENSE = (
    _linear("mnist-cnn.fc1", 3136, 128, origin="MNIST CNN fc1"),
    _linear("mnist-cnn.fc2", 128, 10, origin="MNIST CNN fc2"),
    _linear("lenet5.fc1", 400, 120, origin="LeNet-5 fc1"),
    _linear("lenet5.fc2", 120, 84, origin="LeNet-5 fc2"),
    _linear("lenet5.fc3", 84, 10, origin="LeNet-5 fc3"),
)

MODELS = tuple(ModelCase(model, batch) for model in ("lenet5", "mnist-cnn") for batch in (64, 128))
#: ResNet-20 at CIFAR-10's input shape (3x32x32, 10 classes).
RESNET20 = tuple(ModelCase("resnet20", batch, 3, 32, 10) for batch in (64, 128))
#: The latency suite: one image per call (what an interactive user waits for), and the
#: throughput at batch 64.
LATENCY = tuple(replace(case, batch=batch) for batch in (1, 64)
                for case in (ModelCase("lenet5"), ModelCase("mnist-cnn"), RESNET20[0]))

TINY = (
    _conv("tiny.conv", 2, 4, 3, 8, padding=1, origin="tiny", batch=8),
    _conv("tiny.grouped-s2", 4, 4, 3, 8, stride=2, padding=1, groups=2, origin="tiny", batch=8),
    _pool("tiny.pool", "maxpool", 4, 8, origin="tiny", batch=8),
    _pool("tiny.pool", "avgpool", 4, 8, origin="tiny", batch=8),
    _linear("tiny.fc", 64, 10, origin="tiny", batch=8),
)

SUITES: dict[str, Suite] = {
    "conv": Suite("conv", "convolution layers of LeNet-5, the MNIST CNN, CIFAR-style and "
                          "depthwise-separable nets", layers=CONV),
    "pool": Suite("pool", "max and average pooling 2x2 s2", layers=POOL),
    "dense": Suite("dense", "the linear layers of LeNet-5 and the MNIST CNN", layers=DENSE),
    "layers": Suite("layers", "conv + pool + dense", layers=CONV + POOL + DENSE),
    "models": Suite("models", "training steps and inference of LeNet-5, the MNIST CNN and "
                              "ResNet-20 (3x32x32)", models=MODELS + RESNET20),
    "latency": Suite("latency", "inference call by call (median and p99) at batch 1, and "
                                "images/s at batch 64, of LeNet-5, the MNIST CNN and ResNet-20, "
                                "each competitor in its own process",
                     models=LATENCY, latency=True),
    "standard": Suite("standard", "layers + models + Numba compile cost",
                      layers=CONV + POOL + DENSE, models=MODELS, compile_default=True),
    "epoch": Suite("epoch", "one training epoch of `minicnn train --model mnist-cnn` against a "
                            "plain PyTorch script with the same recipe and data, each in its "
                            "own process", models=(ModelCase("mnist-cnn", 64),), epoch=True),
    "tiny": Suite("tiny", "a few very small shapes and LeNet-5 at batch 8, models timed "
                          "in-process (for tests)",
                  layers=TINY, models=(ModelCase("lenet5", 8),), model_runs="in-process"),
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]
