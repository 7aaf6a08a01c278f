"""Layers with explicit, hand-derived backward passes, named as in ``torch.nn``.

What every layer accepts, the same with every kernel backend:

- input: a float32 or float64 ndarray, any memory layout; big-endian input is converted to
  native byte order; float16, integer, bool and complex input is a ``TypeError`` that says
  how to convert. A batch of 0 samples gives an empty output, as in PyTorch.
- ``backward(dy)``: ``dy`` must have the forward output's shape (else ``ValueError`` naming
  the layer, the expected and the given shape) and a floating dtype, converted to the
  output's dtype. It is checked before any state changes. Calling ``backward`` again on the
  same forward returns the same ``dx`` and adds the parameter gradients again.
"""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .blocks import BasicBlock
from .conv import Conv2d
from .dropout import Dropout
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .sequential import Sequential

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BasicBlock", "BatchNorm1d", "BatchNorm2d", "Conv2d",
    "CrossEntropyLoss", "Dropout", "Flatten", "LeakyReLU", "Linear", "MSELoss", "MaxPool2d",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh",
]
