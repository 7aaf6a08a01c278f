"""Layers with explicit, hand-derived backward passes, named as in ``torch.nn``."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .blocks import BasicBlock
from .conv import Conv2d
from .dropout import Dropout
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BasicBlock", "BatchNorm1d", "BatchNorm2d", "Conv2d",
    "CrossEntropyLoss", "Dropout", "Flatten", "LeakyReLU", "Linear", "MSELoss", "MaxPool2d",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh",
]
