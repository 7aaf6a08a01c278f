"""minicnn: a convolutional-network engine written from scratch to be read and measured.

>>> import numpy as np
>>> from minicnn import nn, optim
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
...                       nn.Linear(8 * 28 * 28, 10))
"""

from . import allocator

# Keep the memory a training step frees for the next one (see minicnn/allocator.py; opt out
# with MINICNN_ALLOCATOR=system).
allocator.keep_freed_memory()

from . import init, kernels, nn, optim  # noqa: E402
from .gradcheck import GradcheckResult, gradcheck  # noqa: E402
from .init import manual_seed  # noqa: E402
from .kernels import get_default_backend, set_default_backend, use_backend  # noqa: E402
from .serialize import load, save  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "GradcheckResult", "allocator", "get_default_backend", "gradcheck", "init", "kernels",
    "load", "manual_seed", "nn", "optim", "save", "set_default_backend", "use_backend",
]
