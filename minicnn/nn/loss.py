"""Losses. ``forward(prediction, target)`` returns a Python float; ``backward()`` returns the
gradient of that float with respect to ``prediction``."""

from __future__ import annotations

import numpy as np

from ._checks import check_array
from .functional import log_softmax
from .module import Module


class _Loss(Module):
    """Base class: losses end the graph, so ``backward`` takes no upstream gradient."""

    def __call__(self, prediction, target):
        return self.forward(prediction, target)

    @staticmethod
    def _check_finite(name: str, prediction: np.ndarray) -> None:
        if not np.all(np.isfinite(prediction)):
            bad = int(np.size(prediction) - np.count_nonzero(np.isfinite(prediction)))
            raise ValueError(f"{name}: input contains {bad} NaN or infinite value(s); the "
                             "network has diverged (try a lower learning rate)")


class CrossEntropyLoss(_Loss):
    """Softmax + negative log-likelihood in one numerically stable step, as PyTorch's.

    ``loss = mean_n [ -log softmax(logits_n)[y_n] ]`` computed with the log-sum-exp trick
    (subtract each row's max before ``exp``). The fused gradient is simply
    ``(softmax(logits) - onehot(y)) / N``. With ``label_smoothing = ε`` the target is
    ``(1 - ε) * onehot + ε / C``.

    Shapes
    ------
    logits ``(N, C)`` float; targets ``(N,)`` integers in ``[0, C)``.
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self._cache = None

    def forward(self, logits: np.ndarray, targets) -> float:
        name = "CrossEntropyLoss"
        if not isinstance(logits, np.ndarray) or logits.ndim != 2:
            raise ValueError(f"{name}: expected logits of shape (N, C), got "
                             f"{getattr(logits, 'shape', type(logits).__name__)}")
        logits = check_array(name, logits, "(N, C)")
        targets = np.asarray(targets)
        n, classes = logits.shape
        if targets.shape != (n,):
            raise ValueError(f"{name}: expected targets of shape ({n},) to match logits "
                             f"{logits.shape}, got {targets.shape}")
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"{name}: expected integer class labels, got dtype {targets.dtype}")
        if n and (targets.min() < 0 or targets.max() >= classes):
            raise ValueError(f"{name}: labels must be in [0, {classes}), got values from "
                             f"{targets.min()} to {targets.max()}")
        self._check_finite(name, logits)

        log_probs = log_softmax(logits, axis=1)
        target_dist = np.zeros_like(logits)
        target_dist[np.arange(n), targets] = 1
        if self.label_smoothing:
            eps = self.label_smoothing
            target_dist = target_dist * (1 - eps) + eps / classes
        self._cache = (np.exp(log_probs), target_dist)
        if n == 0:
            return float("nan")  # the mean over no samples, as PyTorch (without a warning)
        return float(-(target_dist * log_probs).sum() / n)

    def backward(self) -> np.ndarray:
        """``d loss / d logits = (softmax - target) / N``, shape ``(N, C)``."""
        self._require_forward(self._cache)
        probs, target_dist = self._cache
        return ((probs - target_dist) / max(probs.shape[0], 1)).astype(probs.dtype, copy=False)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}" if self.label_smoothing else ""


class MSELoss(_Loss):
    """Mean squared error ``mean((prediction - target)²)`` over every element.

    Shapes: prediction and target of the same shape; gradient ``2 (p - t) / size``.
    """

    def __init__(self):
        super().__init__()
        self._diff = None

    def forward(self, prediction: np.ndarray, target) -> float:
        name = "MSELoss"
        prediction = check_array(name, prediction)
        target = np.asarray(target)
        if target.shape != prediction.shape:
            raise ValueError(f"{name}: prediction {prediction.shape} and target "
                             f"{target.shape} must have the same shape")
        self._check_finite(name, prediction)
        self._diff = prediction - target.astype(prediction.dtype, copy=False)
        if self._diff.size == 0:
            return float("nan")  # the mean of nothing, as PyTorch (without a warning)
        return float(np.mean(self._diff * self._diff))

    def backward(self) -> np.ndarray:
        self._require_forward(self._diff)
        return (2 * self._diff / max(self._diff.size, 1)).astype(self._diff.dtype, copy=False)
