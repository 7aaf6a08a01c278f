"""Worked solution to tutorial 01's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def to_network_input(images, mean, std):
    """Turn a batch as image files store it into what a network expects.

    images (N, H, W, C) uint8, mean and std C floats each (on the [0, 1] scale)
    -> x (N, C, H, W) float32, x[n, c] = (images[n, :, :, c] / 255 - mean[c]) / std[c].
    """
    # transpose moves the channel axis (reshape would only cut the same row of numbers
    # differently, scrambling the pixels). It is a view with the file's NHWC memory order;
    # astype(order="C") copies it into NCHW order, so each channel plane is contiguous.
    x = images.transpose(0, 3, 1, 2).astype(np.float32, order="C") / np.float32(255)
    # (C,) -> (1, C, 1, 1): one value per channel, broadcast over images, rows and columns.
    # float32, or the float64 statistics would promote the whole batch to float64.
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std
