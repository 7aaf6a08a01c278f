"""Worked solution to tutorial 07's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def batchnorm2d_backward(dy, x, gamma, eps=1e-5):
    """Backward of training-mode batch norm, y = gamma * x_hat + beta.

    dy, x (N, C, H, W), gamma (C,) -> dx (N, C, H, W), dgamma (C,), dbeta (C,).
    """
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    x_hat = (x - mean) * inv_std
    dgamma = (dy * x_hat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dx_hat = dy * gamma[None, :, None, None]
    # x_hat depends on x directly, through the mean and through the variance: the two means
    # below are those two extra paths.
    dx = inv_std * (dx_hat - dx_hat.mean(axis=axes, keepdims=True)
                    - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True))
    return dx, dgamma, dbeta
