"""Worked solution to tutorial 10's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def saliency_maps(net, images, classes):
    """Saliency of one chosen class per image, for the whole batch in one backward pass.

    images (N, C, H, W), classes (N,) ints -> (N, H, W): for each image n, the largest over
    the channels of |d logits[n, classes[n]] / d images[n]|.
    """
    logits = net(images)
    # Row n of dy selects the score of image n's class. The images do not interact in the
    # network (no batch norm in training mode), so row n of dx is that score's gradient.
    dy = np.zeros_like(logits)
    dy[np.arange(len(images)), classes] = 1
    dx = net.backward(dy)
    net.zero_grad()                   # backward also accumulated parameter gradients
    return np.abs(dx).max(axis=1)
