"""BasicBlock's fused batch norms in training (minicnn.nn.blocks, the batch-norm kernel's
residual and ReLU, minicnn.kernels.batchnorm): the same forward bit for bit as the layers one
after another, the same gradients and running statistics (float32 rounding; bit for bit on the
machine that wrote these tests), and the layers still usable one at a time; no fusion where
something could tell the difference."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from minicnn import kernels, nn
from minicnn.kernels import batchnorm, pointwise


def _pair(in_ch, out_ch, stride, dtype):
    fused = nn.BasicBlock(in_ch, out_ch, stride=stride, rng=0, dtype=dtype)
    plain = nn.BasicBlock(in_ch, out_ch, stride=stride, rng=0, dtype=dtype)
    plain.fuse = False
    rng = np.random.default_rng(3)
    for block in (fused, plain):
        for name, p in block.named_parameters():
            if "bn" in name or "downsample.1" in name:
                p.data[...] = np.random.default_rng(len(name)).uniform(0.5, 1.5, p.data.shape)
        block.train()
    return fused, plain, rng


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(4, 4, 1), (3, 5, 2)],
                         ids=["identity", "downsample"])
def test_fused_block_equals_the_layers(in_ch, out_ch, stride, dtype, tol, threads):
    fused, plain, rng = _pair(in_ch, out_ch, stride, dtype)
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with kernels.use_backend("numba"):
            for step in range(2):
                x = rng.standard_normal((5, in_ch, 9, 8)).astype(dtype)
                y, y_plain = fused(x), plain(x)
                assert fused._relu_fused and not plain._relu_fused
                np.testing.assert_array_equal(y, y_plain)
                # the layers kept what their own forwards keep: the ReLUs their outputs
                np.testing.assert_array_equal(fused.relu_out._y, plain.relu_out._y)
                np.testing.assert_array_equal(fused.relu._y, plain.relu._y)
                dy = rng.standard_normal(y.shape).astype(dtype)
                dx, dx_plain = fused.backward(dy), plain.backward(dy)
                np.testing.assert_allclose(dx, dx_plain, rtol=tol, atol=tol)
    finally:
        numba.set_num_threads(previous)
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=tol, atol=tol, err_msg=name)
    for (name, b), (_, c) in zip(fused.named_buffers(), plain.named_buffers()):
        np.testing.assert_array_equal(b, c, err_msg=name)


def test_fused_layers_still_run_backward_one_at_a_time():
    """After a fused forward, the ReLU and the batch norm each take their own backward."""
    fused, plain, rng = _pair(4, 4, 1, np.float32)
    with kernels.use_backend("numba"):
        x = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
        fused(x), plain(x)
        dy = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
        for block in (fused, plain):
            block._got = block.bn1.backward(block.relu.backward(dy))
    np.testing.assert_allclose(fused._got, plain._got, rtol=1e-5, atol=1e-6)


def test_no_fusion_where_something_could_tell():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    with kernels.use_backend("numba"):
        block = nn.BasicBlock(4, 4, rng=0)
        block.eval()                                    # running statistics: no batch norm pass
        block(x)
        assert not block._relu_fused
        block.train()
        seen = []
        original = block.relu.forward
        block.relu.forward = lambda v: seen.append(v) or original(v)    # as profile() does
        block(x)
        assert not block._relu_fused and len(seen) == 1
        del block.relu.forward
        block(x)
        assert block._relu_fused
    with kernels.use_backend("reference"):              # the batch norm's NumPy definition
        block(x)
        assert not block._relu_fused


def test_a_bad_gradient_is_refused_before_anything_changes():
    fused, _, rng = _pair(4, 4, 1, np.float32)
    with kernels.use_backend("numba"):
        fused(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
        with pytest.raises(ValueError, match="BasicBlock"):
            fused.backward(np.zeros((2, 4, 5, 4), np.float32))
        grads = [p.grad.copy() for p in fused.parameters()]
        with pytest.raises(ValueError, match="ReLU"):
            fused.bn1._backward_through_relu(np.zeros((2, 4, 5, 4), np.float32), fused.relu)
        assert all(np.array_equal(g, p.grad) for g, p in zip(grads, fused.parameters()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_residual_and_relu_are_the_separate_passes(dtype):
    """The kernel's forward with a residual and a ReLU equals the batch norm, the add and the
    ReLU one after another bit for bit (NaN kept, -0.0 kept); backward through the ReLU
    equals the ReLU's backward then the batch norm's."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 37)).astype(dtype)
    x[1, 2, 5] = np.nan
    gamma = rng.uniform(0.5, 1.5, 3).astype(dtype)
    beta = rng.standard_normal(3).astype(dtype)
    residual = rng.standard_normal(x.shape).astype(dtype)
    y, *_ = batchnorm.forward(x, gamma, beta, 1e-5)
    for res in (None, residual):
        fused, mean, _, inv_std = batchnorm.forward(x, gamma, beta, 1e-5, res, True)
        expected = pointwise.relu_forward(y if res is None else y + res)
        np.testing.assert_array_equal(fused, expected)
        dy = rng.standard_normal(x.shape).astype(dtype)
        got = batchnorm.backward(dy, x, mean, gamma, inv_std, relu_out=fused)
        want = batchnorm.backward(pointwise.relu_backward(dy, fused), x, mean, gamma, inv_std)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
