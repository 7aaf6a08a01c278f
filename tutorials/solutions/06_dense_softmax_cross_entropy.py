"""Worked solution to tutorial 06's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) and its gradient.

    logits (N, C) floats, labels (N,) ints -> (loss: float, dlogits (N, C)).
    """
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)          # every exponent <= 0
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1                            # softmax - onehot
    return float(loss), dlogits / n
