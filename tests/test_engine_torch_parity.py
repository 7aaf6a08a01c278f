"""Forward and backward parity with PyTorch in float32, every layer and every backend, all
through :func:`torch_oracle.check_against_torch` (tolerances live there)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")]

from minicnn import nn  # noqa: E402
from minicnn.kernels import BACKENDS  # noqa: E402
from torch_oracle import (CONV_GRID, assert_close, check_against_torch,  # noqa: E402
                          compact, conv_id, spaced, torch_basic_block)

F32 = np.float32


def x32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


# --------------------------------------------------------------------------------------------
# Conv2d
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONV_GRID, ids=conv_id)
def test_conv2d(cfg, backend, rng):
    cin, cout, k, s, p, d, g, bias, hw = cfg
    ours = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias,
                     backend=backend, rng=1)
    theirs = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g,
                             bias=bias)
    x = x32(rng, (2, cin, *hw))
    y, _ = check_against_torch(ours, theirs, x)
    assert y.shape == ours.output_shape(x.shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_accumulates_gradients_like_torch(backend, rng):
    """Two backward passes without zero_grad add up, as in PyTorch."""
    ours = nn.Conv2d(2, 3, 3, padding=1, backend=backend, rng=1)
    theirs = torch.nn.Conv2d(2, 3, 3, padding=1)
    x1, x2 = x32(rng, (2, 2, 5, 5)), x32(rng, (2, 2, 5, 5))
    check_against_torch(ours, theirs, x1, seed=1)
    g = np.random.default_rng(2).standard_normal((2, 3, 5, 5)).astype(F32)
    ours(x2)
    ours.backward(g)
    theirs(torch.from_numpy(x2)).backward(torch.from_numpy(g))
    for name, param in ours.named_parameters():
        assert_close(param.grad, dict(theirs.named_parameters())[name].grad.numpy(),
                     f"accumulated grad of {name}")
    assert not np.allclose(ours.weight.grad, 0)


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
#: (kernel, stride, padding, (H, W))
POOL_GRID = [
    (2, None, 0, (6, 6)),
    (2, None, 0, (7, 5)),          # odd sizes: the last row/column is dropped
    (3, 2, 1, (7, 7)),             # overlapping windows with padding
    (3, 1, 1, (5, 6)),
    (3, 3, 0, (8, 10)),
    ((2, 3), (1, 2), (1, 1), (5, 7)),
    ((3, 2), (2, 1), (1, 0), (6, 5)),
    (4, 2, 2, (5, 5)),
]


def pool_id(cfg):
    k, s, p, hw = cfg
    return f"k{compact(k)}_s{compact(s)}_p{compact(p)}_{compact(hw)}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", POOL_GRID, ids=pool_id)
def test_maxpool2d(cfg, backend, rng):
    k, s, p, hw = cfg
    x = spaced((2, 3, *hw), rng, dtype=F32)  # distinct values: one clear argmax per window
    check_against_torch(nn.MaxPool2d(k, s, p, backend=backend),
                        torch.nn.MaxPool2d(k, s, p), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
@pytest.mark.parametrize("cfg", POOL_GRID, ids=pool_id)
def test_avgpool2d(cfg, count_include_pad, backend, rng):
    k, s, p, hw = cfg
    ours = nn.AvgPool2d(k, s, p, count_include_pad=count_include_pad, backend=backend)
    theirs = torch.nn.AvgPool2d(k, s, p, count_include_pad=count_include_pad)
    check_against_torch(ours, theirs, x32(rng, (2, 3, *hw)))


@pytest.mark.parametrize("output_size, hw", [(1, (5, 4)), (1, (1, 1)), (3, (7, 7)),
                                             ((2, 3), (5, 7)), (4, (6, 9)), (5, (3, 4)),
                                             ((3, 1), (8, 3))])
def test_adaptive_avg_pool2d(output_size, hw, rng):
    check_against_torch(nn.AdaptiveAvgPool2d(output_size),
                        torch.nn.AdaptiveAvgPool2d(output_size), x32(rng, (2, 3, *hw)))


# --------------------------------------------------------------------------------------------
# Dense, shape, element-wise
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias, rng):
    check_against_torch(nn.Linear(7, 5, bias=bias, rng=0), torch.nn.Linear(7, 5, bias=bias),
                        x32(rng, (4, 7)))


@pytest.mark.parametrize("start_dim, end_dim", [(1, -1), (2, 3), (0, 1)])
def test_flatten(start_dim, end_dim, rng):
    check_against_torch(nn.Flatten(start_dim, end_dim), torch.nn.Flatten(start_dim, end_dim),
                        x32(rng, (2, 3, 4, 5)))


@pytest.mark.parametrize("ours, theirs", [
    (nn.ReLU, torch.nn.ReLU),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (nn.LeakyReLU, torch.nn.LeakyReLU),
    (nn.Sigmoid, torch.nn.Sigmoid),
    (nn.Tanh, torch.nn.Tanh),
], ids=["relu", "leaky_relu_0.2", "leaky_relu_default", "sigmoid", "tanh"])
def test_activation(ours, theirs, rng):
    x = x32(rng, (3, 4, 5), scale=4.0)
    x[0, 0, :3] = [0.0, 40.0, -40.0]   # the kink and saturation
    check_against_torch(ours(), theirs(), x)


def test_dropout_eval_is_identity(rng):
    ours, theirs = nn.Dropout(0.5, rng=0), torch.nn.Dropout(0.5)
    ours.eval()
    x = x32(rng, (4, 6))
    y, dx = check_against_torch(ours, theirs, x)
    np.testing.assert_array_equal(y, x)


def test_dropout_train_statistics(rng):
    """Training mode cannot match torch draw for draw; it must match it in law: survivors
    scaled by 1/(1-p), about p dropped, and the backward uses the forward's mask."""
    p = 0.3
    layer = nn.Dropout(p, rng=0)
    x = np.ones((200, 50), F32)
    y = layer(x)
    assert set(np.unique(y)) <= {F32(0), F32(1 / (1 - p))}
    assert abs(np.mean(y == 0) - p) < 0.02
    dx = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(dx, 2 * y)


# --------------------------------------------------------------------------------------------
# BatchNorm
# --------------------------------------------------------------------------------------------
BN_CASES = [("1d", (6, 4)), ("1d", (5, 3, 4)), ("2d", (3, 4, 5, 3))]


def make_bn(kind, channels, momentum=0.1):
    if kind == "1d":
        return nn.BatchNorm1d(channels, momentum=momentum), torch.nn.BatchNorm1d(
            channels, momentum=momentum)
    return nn.BatchNorm2d(channels, momentum=momentum), torch.nn.BatchNorm2d(
        channels, momentum=momentum)


@pytest.mark.parametrize("momentum", [0.1, 0.5])
@pytest.mark.parametrize("kind, shape", BN_CASES, ids=["1d_NC", "1d_NCL", "2d"])
def test_batchnorm_train_running_stats(kind, shape, momentum, rng):
    ours, theirs = make_bn(kind, shape[1], momentum)
    ours.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    ours.bias.data[...] = rng.uniform(-1, 1, shape[1])
    for step in range(4):
        # shifted, scaled batches so the running statistics really move
        x = x32(rng, shape, scale=2.0) + F32(step)
        check_against_torch(ours, theirs, x, sync=(step == 0), seed=step)
    assert int(ours.state_dict()["num_batches_tracked"]) == 4
    assert not np.allclose(ours.running_mean, 0)


@pytest.mark.parametrize("kind, shape", BN_CASES, ids=["1d_NC", "1d_NCL", "2d"])
def test_batchnorm_eval(kind, shape, rng):
    ours, theirs = make_bn(kind, shape[1])
    ours.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    ours.bias.data[...] = rng.uniform(-1, 1, shape[1])
    ours.running_mean[...] = rng.uniform(-1, 1, shape[1])
    ours.running_var[...] = rng.uniform(0.5, 2, shape[1])
    ours.eval()
    check_against_torch(ours, theirs, x32(rng, shape))
    assert int(ours.state_dict()["num_batches_tracked"]) == 0   # eval does not count


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy(label_smoothing, rng):
    logits = x32(rng, (6, 5), scale=3.0)
    logits[0, 0] = 60.0   # large logits must not overflow
    targets = np.array([0, 1, 4, 4, 2, 3])
    check_against_torch(nn.CrossEntropyLoss(label_smoothing=label_smoothing),
                        torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing),
                        logits, targets)


def test_mse(rng):
    target = x32(rng, (3, 4, 2))
    check_against_torch(nn.MSELoss(), torch.nn.MSELoss(), x32(rng, (3, 4, 2)), target)


# --------------------------------------------------------------------------------------------
# Composite models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(3, 4, 2), (4, 4, 1), (3, 5, 1)],
                         ids=["downsample_stride2", "identity", "downsample_channels"])
def test_basic_block(in_ch, out_ch, stride, training, backend, rng):
    ours = nn.BasicBlock(in_ch, out_ch, stride=stride, backend=backend, rng=3)
    theirs = torch_basic_block(in_ch, out_ch, stride)
    for name, buf in ours.named_buffers():
        if name.endswith("running_var"):
            buf[...] = rng.uniform(0.5, 2, buf.shape)
        elif name.endswith("running_mean"):
            buf[...] = rng.uniform(-0.5, 0.5, buf.shape)
    ours.train(training)
    for step in range(2):
        check_against_torch(ours, theirs, x32(rng, (2, in_ch, 7, 6)), sync=(step == 0),
                            seed=step)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_cnn(backend, rng):
    ours = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, backend=backend, rng=0), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(6, 8, 3, stride=2, padding="valid", backend=backend, rng=1), nn.Tanh(),
        nn.AvgPool2d(2, stride=1, backend=backend), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 10, rng=2))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 8, 3, stride=2, padding="valid"),
        torch.nn.Tanh(), torch.nn.AvgPool2d(2, stride=1), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 10))
    check_against_torch(ours, theirs, x32(rng, (4, 3, 12, 11)))
