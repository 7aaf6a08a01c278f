"""minicnn: a convolutional-network engine written from scratch to be read and measured.

>>> import numpy as np
>>> from minicnn import nn, optim
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
...                       nn.Linear(8 * 28 * 28, 10))
"""

from . import init, kernels, nn, optim
from .gradcheck import GradcheckResult, gradcheck
from .init import manual_seed
from .kernels import get_default_backend, set_default_backend, use_backend
from .serialize import load, save

__version__ = "0.1.0"

__all__ = [
    "GradcheckResult", "get_default_backend", "gradcheck", "init", "kernels", "load",
    "manual_seed", "nn", "optim", "save", "set_default_backend", "use_backend",
]
