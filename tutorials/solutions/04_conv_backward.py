"""Worked solution to tutorial 04's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def conv2d_backward(x, weight, dy, stride=1, padding=0):
    """Gradients of a convolution, one kernel tap at a time.

    x (N, C, H, W), weight (O, C, kH, kW), dy (N, O, H_out, W_out)
    -> dx (N, C, H, W), dweight (O, C, kH, kW), dbias (O,).
    """
    _, _, h, w = x.shape
    _, _, kh, kw = weight.shape
    out_h, out_w = dy.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dpadded = np.zeros_like(padded)
    dweight = np.zeros_like(weight)
    for u in range(kh):
        for v in range(kw):
            # The input pixels tap (u, v) reads: every stride-th one, starting at (u, v).
            rows = slice(u, u + stride * out_h, stride)
            cols = slice(v, v + stride * out_w, stride)
            dweight[:, :, u, v] = np.einsum("nohw,nchw->oc", dy, padded[:, :, rows, cols])
            # Those same pixels receive dy times the tap's weight; += because other taps
            # read them too.
            dpadded[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dy, weight[:, :, u, v])
    dx = dpadded[:, :, padding:padding + h, padding:padding + w]
    return dx, dweight, dy.sum(axis=(0, 2, 3))
