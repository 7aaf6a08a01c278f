"""Stateless functions on arrays that several parts of minicnn need, written once.

Named as in ``torch.nn.functional``. The layers use them in their forward passes; the
command line, the explorer and the detector use them to turn logits into probabilities.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(softmax(logits))`` along ``axis``, computed without overflow.

    The largest logit is subtracted first, so ``exp`` never sees a positive argument:
    ``shifted - log(sum(exp(shifted)))``. Any shape; the result has ``logits``' shape and dtype.
    """
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    Any shape; the result has ``logits``' shape and dtype, and sums to 1 along ``axis``.
    """
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)
