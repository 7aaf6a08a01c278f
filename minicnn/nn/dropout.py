"""``Dropout``: inverted dropout, active only in training mode."""

from __future__ import annotations

import numpy as np

from .. import init
from ._checks import check_array
from .module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` and scale survivors by ``1 / (1 - p)``
    ("inverted" dropout: the expected activation is unchanged, so eval mode is the identity).

    Parameters
    ----------
    p : float in [0, 1)
    rng : numpy.random.Generator, int or None
        Draws the masks; a seeded generator makes training repeatable. ``None`` (default)
        draws from minicnn's default generator *at each forward*, so
        :func:`minicnn.manual_seed` governs the masks even of a layer built before it was
        called (as ``torch.manual_seed`` does for ``torch.nn.Dropout``).

    Shapes: any, output as input.
    """

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)
        # None stays None: resolving it now would freeze today's default generator in the layer.
        self.rng = None if rng is None else init.resolve_rng(rng)
        self._scale_mask = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_array("Dropout", x)
        if not self.training or self.p == 0.0:
            self._scale_mask = np.ones((), dtype=x.dtype)
            return self._output(x)
        rng = init.default_rng() if self.rng is None else self.rng
        keep = rng.random(x.shape) >= self.p
        self._scale_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return self._output(x * self._scale_mask)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self._check_dy(dy, self._scale_mask)
        return dy * self._scale_mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
