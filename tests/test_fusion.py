"""Fused ``Conv2d -> ReLU (-> MaxPool2d(2))`` blocks (:mod:`minicnn.nn.fusion`).

A fused block must be invisible except in time: the same output, input gradient and
parameter gradients *bit for bit* as the layers run one by one (``Sequential.fuse = False``),
every layer left holding what its own forward would have kept, bad input rejected before
anything changes, and fusion applied exactly where its conditions hold. PyTorch parity and
float64 gradient checks on the fused blocks come on top, on the shapes the fused passes
special-case (odd conv outputs that pooling leaves a row or column of, batch 1, a batch
smaller than the thread count, the shift and both unroll paths).
"""

import copy

import numba
import numpy as np
import pytest

import minicnn
from minicnn import kernels, models, nn
from minicnn.kernels import blas, onepool
from torch_oracle import GRADCHECK_TOL, check_against_torch

pytestmark = pytest.mark.skipif(not blas.AVAILABLE,
                                reason="NumPy's BLAS exports no in-kernel GEMM here")

#: (batch, C_in, C_out, kernel, stride, padding, bias, HxW, pool after the ReLU)
BLOCKS = [
    (4, 1, 8, 3, 1, 1, True, (12, 12), True),      # MNIST conv1-like: unroll path
    (3, 12, 6, 3, 1, 1, True, (9, 7), True),       # shift path; odd output: a row/column left
    (1, 12, 5, 3, 1, 1, False, (6, 6), True),      # batch 1, no bias
    (5, 3, 4, 5, 1, 2, True, (11, 10), True),      # LeNet-like 5x5, odd height
    (6, 4, 3, 3, 2, 1, True, (13, 9), True),       # strided conv (unroll on the plain grid)
    (2, 12, 4, 3, 1, 0, True, (5, 5), True),       # 'valid' 3x3 -> 3x3: one window, a row left
    (3, 5, 4, 3, 1, 1, True, (7, 8), False),       # Conv2d -> ReLU only
    (1, 16, 3, 3, 1, 1, True, (4, 4), False),      # ReLU only, shift path, batch 1
]


def block_id(case):
    n, cin, cout, k, stride, pad, bias, (h, w), pool = case
    return (f"n{n}-c{cin}to{cout}-k{k}-s{stride}-p{pad}-{h}x{w}"
            f"{'' if bias else '-nobias'}{'-pool' if pool else '-relu'}")


def make_block(case, dtype=np.float32, seed=0):
    n, cin, cout, k, stride, pad, bias, _, pool = case
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=bias, backend="numba",
                        rng=seed, dtype=dtype),
              nn.ReLU(backend="numba")]
    if pool:
        layers.append(nn.MaxPool2d(2, backend="numba"))
    return nn.Sequential(*layers)


def with_threads(n_threads, call):
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return call()
    finally:
        numba.set_num_threads(previous)


def bits(array):
    """The array's bytes: equal bits, so -0.0 differs from 0.0 and NaN equals NaN."""
    return None if array is None else (array.dtype, array.shape, array.tobytes())


def run(model, x, dy, need_input_grad=True):
    model.zero_grad()
    y = model(x)
    dx = model.backward(dy, need_input_grad=need_input_grad)
    return [y, dx] + [p.grad.copy() for p in model.parameters()]


def fused_and_separate(build, x, dy, n_threads, need_input_grad=True):
    fused, separate = build(), build()
    separate.fuse = False
    got = with_threads(n_threads, lambda: run(fused, x, dy, need_input_grad))
    want = with_threads(n_threads, lambda: run(separate, x, dy, need_input_grad))
    assert fused._fused_blocks, "the block was not fused: the comparison would prove nothing"
    assert not separate._fused_blocks
    return got, want


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", BLOCKS, ids=block_id)
def test_fused_block_is_bit_identical_to_the_layers(case, dtype, n_threads, rng):
    n, cin, _, _, _, _, _, (h, w), _ = case
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    out_shape = make_block(case, dtype)(x).shape
    dy = rng.standard_normal(out_shape).astype(dtype)
    got, want = fused_and_separate(lambda: make_block(case, dtype), x, dy, n_threads)
    for name, a, b in zip(["y", "dx", "dweight", "dbias"], got, want):
        assert bits(a) == bits(b), f"{name} differs from the layers run one by one"


@pytest.mark.parametrize("n_threads", [1, 2])
def test_ties_zeros_nan_and_signed_zeros_follow_the_layers(n_threads, rng):
    """After the ReLU many windows are all zeros (ties), a NaN must win its window and pass
    its gradient, -0.0 and +0.0 must come out exactly as the layers give them."""
    case = (3, 12, 6, 3, 1, 1, True, (8, 8), True)
    x = rng.standard_normal((3, 12, 8, 8)).astype(np.float32)
    x[0, :, :4, :4] = -5.0            # negative region: windows of zeros after the ReLU
    x[1, 3, 2, 2] = np.nan            # spreads to every channel's output around (2, 2)
    x[2, :, 5:, 5:] = 0.0

    def build():
        model = make_block(case)
        model[0].bias.data[:] = 0.0   # outputs of exactly 0 where the input is 0
        model[0].weight.data[0] = -np.abs(model[0].weight.data[0])
        return model

    dy = rng.standard_normal((3, 6, 4, 4)).astype(np.float32)
    dy[0, 0, 0, 0] = -0.0
    dy[2, 1] = np.inf
    got, want = fused_and_separate(build, x, dy, n_threads)
    assert np.isnan(got[0]).any() and (got[0] == 0).any(), "the input did not reach the cases"
    for name, a, b in zip(["y", "dx", "dweight", "dbias"], got, want):
        assert bits(a) == bits(b), f"{name} differs from the layers run one by one"


@pytest.mark.parametrize("build", [models.mnist_cnn, models.lenet5],
                         ids=["mnist_cnn", "lenet5"])
@pytest.mark.parametrize("n", [1, 3, 16])
def test_models_fuse_both_blocks_and_train_the_same(build, n, rng):
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    dy = rng.standard_normal((n, 10)).astype(np.float32)
    for n_threads in (1, 2):
        got, want = fused_and_separate(lambda: build(rng=0, backend="numba"), x, dy, n_threads,
                                       need_input_grad=False)
        assert got[1] is None and want[1] is None
        for index, (a, b) in enumerate(zip(got, want)):
            assert bits(a) == bits(b), f"output {index} differs from the layers one by one"
    model = build(rng=0, backend="numba")
    model(x)
    assert sorted(model._fused_blocks) == [2, 5]   # conv-relu-pool, twice


def test_each_layer_keeps_what_its_own_forward_keeps(rng):
    """After a fused forward every layer's own backward works and agrees with the fused one,
    and the ReLU and pooling hold exactly the layers' state (output, winners)."""
    case = (4, 12, 6, 3, 1, 1, True, (9, 7), True)
    x = rng.standard_normal((4, 12, 9, 7)).astype(np.float32)
    fused, separate = make_block(case), make_block(case)
    separate.fuse = False
    y = fused(x)
    separate(x)
    for a, b in ((fused[1]._y, separate[1]._y),
                 (fused[2]._ctx.ctx.argmax, separate[2]._ctx.ctx.argmax)):
        assert bits(a) == bits(b)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    fused.zero_grad()
    dx_fused = fused.backward(dy)
    grads = [p.grad.copy() for p in fused.parameters()]
    fused.zero_grad()
    d = dy
    for layer in reversed(list(fused)):
        d = layer.backward(d)
    assert bits(d) == bits(dx_fused)
    for p, g in zip(fused.parameters(), grads):
        assert bits(p.grad) == bits(g)


@pytest.mark.parametrize("case", [BLOCKS[0], BLOCKS[1], BLOCKS[3]], ids=block_id)
def test_eval_mode_pools_without_positions_and_finds_them_if_asked(case, rng):
    """In eval mode the fused pooling skips its winners' positions; the output is the same,
    and a backward after it (a saliency map, say) finds them with the same rule."""
    n, cin, _, _, _, _, _, (h, w), _ = case
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    x[0, 0, :3, :3] = -4.0                       # windows of ReLU zeros: ties
    got, want = [], []
    for model, out in ((make_block(case), got), (make_block(case), want)):
        model.eval()
        model.fuse = out is got
        y = model(x)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        model.zero_grad()
        out += [y, model.backward(dy)] + [p.grad.copy() for p in model.parameters()]
        if out is got:
            assert model._fused_blocks and model[2]._ctx.ctx.argmax is None   # no positions kept
            out.append(model[2].backward(dy))        # the pooling's own backward, positions found
        else:
            out.append(model[2].backward(dy))
    for index, (a, b) in enumerate(zip(got, want)):
        assert bits(a) == bits(b), f"result {index} differs from the layers run one by one"


def test_backward_twice_accumulates_twice(rng):
    case = BLOCKS[1]
    model = make_block(case)
    x = rng.standard_normal((3, 12, 9, 7)).astype(np.float32)
    y = model(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    model.zero_grad()
    first = model.backward(dy)
    once = model[0].weight.grad.copy()
    second = model.backward(dy)
    assert bits(first) == bits(second)
    np.testing.assert_array_equal(model[0].weight.grad, once + once)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", [BLOCKS[1], BLOCKS[3], BLOCKS[6]], ids=block_id)
def test_fused_block_matches_torch(case, dtype, rng):
    torch = pytest.importorskip("torch")
    n, cin, cout, k, stride, pad, bias, (h, w), pool = case
    theirs = [torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=bias),
              torch.nn.ReLU()] + ([torch.nn.MaxPool2d(2)] if pool else [])
    theirs = torch.nn.Sequential(*theirs)
    if dtype == np.float64:
        theirs = theirs.double()
    ours = make_block(case, dtype)
    check_against_torch(ours, theirs, rng.standard_normal((n, cin, h, w)).astype(dtype))
    assert ours._fused_blocks


@pytest.mark.parametrize("case", [BLOCKS[1], BLOCKS[4], BLOCKS[6]], ids=block_id)
def test_fused_block_passes_the_gradient_check(case, rng):
    n, cin, _, _, _, _, _, (h, w), _ = case
    model = make_block(case)
    # Inputs away from the ReLU's kink and the pooling's ties, as for the layers alone.
    x = rng.standard_normal((min(n, 2), cin, h, w))
    copy_ = copy.deepcopy(model).double()
    copy_(x)
    assert copy_._fused_blocks, "float64 must fuse too, or the check proves nothing"
    result = minicnn.gradcheck(model, x)
    assert result.passed(GRADCHECK_TOL), str(result)


# --- where fusion applies ------------------------------------------------------------------
def fused_positions(model, x):
    model(x)
    return sorted(model._fused_blocks)


def test_fusion_needs_the_exact_layers_on_numba(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)

    def block(conv_backend="numba", relu=None, pool=None):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, backend=conv_backend, rng=0),
                             relu or nn.ReLU(backend="numba"),
                             pool or nn.MaxPool2d(2, backend="numba"))

    class MyReLU(nn.ReLU):
        pass

    assert fused_positions(block(), x) == [2]
    assert fused_positions(block(conv_backend="im2col"), x) == []
    assert fused_positions(block(relu=nn.ReLU(backend="reference")), x) == []
    assert fused_positions(block(relu=MyReLU(backend="numba")), x) == []
    assert fused_positions(block(relu=nn.LeakyReLU()), x) == []
    # A pooling the fused pass cannot do: the convolution and ReLU still fuse.
    assert fused_positions(block(pool=nn.MaxPool2d(3, backend="numba")), x) == [1]
    assert fused_positions(block(pool=nn.MaxPool2d(2, stride=1, backend="numba")), x) == [1]
    assert fused_positions(block(pool=nn.MaxPool2d(2, padding=1, backend="numba")), x) == [1]
    assert fused_positions(block(pool=nn.AvgPool2d(2, backend="numba")), x) == [1]
    assert fused_positions(block(pool=nn.MaxPool2d(2, backend="im2col")), x) == [1]
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2, backend="numba", rng=0),
                            nn.ReLU(backend="numba"))
    assert fused_positions(grouped, rng.standard_normal((2, 4, 6, 6)).astype(np.float32)) == []
    off = block()
    off.fuse = False
    assert fused_positions(off, x) == []
    watched = block()                         # a forward replaced on the instance runs alone
    object.__setattr__(watched[1], "forward", watched[1].forward)
    assert fused_positions(watched, x) == []


def test_summary_still_sees_every_layer():
    model = models.mnist_cnn(rng=0, backend="numba")
    kinds = [info.kind for info in models.profile(model, (1, 28, 28))]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
                     "Linear", "ReLU", "Linear"]
    model(np.zeros((1, 1, 28, 28), np.float32))
    assert sorted(model._fused_blocks) == [2, 5]    # and the model still fuses afterwards


def test_fusion_follows_the_default_backend(rng):
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model = models.lenet5(rng=0)              # layers without a backend of their own
    with kernels.use_backend("reference"):
        assert fused_positions(model, x) == []
    with kernels.use_backend("numba"):
        assert fused_positions(model, x) == [2, 5]


def test_an_output_too_small_to_pool_is_left_to_the_pooling_layer(rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, backend="numba", rng=0), nn.ReLU(backend="numba"),
                          nn.MaxPool2d(2, backend="numba"))
    with pytest.raises(ValueError, match="MaxPool2d: kernel"):
        model(rng.standard_normal((1, 2, 3, 4)).astype(np.float32))   # conv output 1x2
    assert fused_positions(model, rng.standard_normal((1, 2, 4, 4)).astype(np.float32)) == [2]


def test_an_empty_batch_gives_empty_results(rng):
    model = make_block(BLOCKS[1])
    y = model(np.zeros((0, 12, 9, 7), np.float32))
    assert y.shape == (0, 6, 4, 3)
    assert model.backward(np.zeros(y.shape, np.float32)).shape == (0, 12, 9, 7)
    np.testing.assert_array_equal(model[0].weight.grad, 0)


# --- bad input ------------------------------------------------------------------------------
def test_bad_input_raises_the_convolutions_error_and_changes_nothing(rng):
    model = make_block(BLOCKS[1])
    with pytest.raises(ValueError, match="Conv2d: expected 12 input channels"):
        model(rng.standard_normal((2, 3, 9, 7)).astype(np.float32))
    assert model[0]._ctx is None and model[1]._y is None and model[2]._ctx is None


def test_bad_gradient_names_the_block_output_layer_and_changes_nothing(rng):
    """A later layer that hands the block a gradient of the wrong shape gets the block's
    last layer's error, before any gradient changes."""
    class WrongGradient(nn.Module):
        def forward(self, x):
            return self._output(x)

        def backward(self, dy):
            return dy[..., :-1]

    for case, layer in ((BLOCKS[1], "MaxPool2d"), (BLOCKS[6], "ReLU")):
        model = nn.Sequential(*make_block(case), WrongGradient())
        n, cin, _, _, _, _, _, (h, w), _ = case
        y = model(rng.standard_normal((n, cin, h, w)).astype(np.float32))
        assert model._fused_blocks
        model.zero_grad()
        with pytest.raises(ValueError, match=f"{layer}.*expected dy of shape"):
            model.backward(np.ones(y.shape, np.float32))
        assert all(not p.grad.any() for p in model.parameters())


def test_a_layer_swapped_after_forward_is_not_backpropagated_as_fused(rng):
    model = make_block(BLOCKS[1])
    y = model(rng.standard_normal((3, 12, 9, 7)).astype(np.float32))
    assert model._fused_blocks[2].matches(list(model))
    setattr(model, "1", nn.ReLU(backend="numba"))   # a new ReLU that never ran
    assert not model._fused_blocks[2].matches(list(model))
    with pytest.raises(RuntimeError, match="ReLU.backward called before forward"):
        model.backward(np.ones(y.shape, np.float32))


def test_kernel_entry_points_check_shapes(rng):
    """The fused kernels index without bounds checks; their entry points check shapes."""
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y, pooled, argmax, ctx = onepool.conv2d_relu_forward(x, weight, None, (1, 1),
                                                         (1, 1, 1, 1), (1, 1), maxpool=True)
    assert y.shape == (2, 4, 6, 6) and pooled.shape == argmax.shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="expected dy of shape"):
        onepool.conv2d_relu_backward(np.ones((2, 4, 6, 6), np.float32), ctx, y, True,
                                     pooled, argmax)
    with pytest.raises(ValueError, match="expected argmax of shape"):
        onepool.conv2d_relu_backward(pooled, ctx, y, True, pooled, argmax[:1])
    with pytest.raises(ValueError, match="expected y of shape"):
        onepool.conv2d_relu_backward(pooled, ctx, y[:1], True, pooled, argmax)
    with pytest.raises(ValueError, match="expected dy of shape"):
        onepool.conv2d_backward(pooled, ctx)
