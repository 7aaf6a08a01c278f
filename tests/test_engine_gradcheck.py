"""Every layer's hand-derived backward against central differences, in float64.

Layers that run kernels (Conv2d, MaxPool2d, AvgPool2d and the models built from them) are
checked with every backend in ``minicnn.kernels.BACKENDS``; the element-wise / dense layers
do not touch a backend, so they are checked once.

ReLU and max kinks are kept out of reach of the finite differences by the inputs
(:func:`torch_oracle.spaced`: values well away from 0 and from each other), not by loosening
the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.kernels import BACKENDS
from torch_oracle import GRADCHECK_TOL, conv_id, spaced


def assert_gradcheck(layer, x, target=None):
    result = minicnn.gradcheck(layer, x, target)
    expected = {"input"} | {name for name, _ in layer.named_parameters()}
    assert set(result.errors) == expected, f"checked {set(result.errors)}, expected {expected}"
    assert result.max_error < GRADCHECK_TOL, f"\n{result}"
    return result


def randomise_batchnorm(module, rng):
    """BatchNorm starts at gamma=1, beta=0, mean 0, var 1: make all four generic so the
    affine gradients matter and eval mode really uses the running statistics."""
    for sub in module.modules():
        if isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
            sub.weight.data[...] = rng.uniform(0.5, 1.5, sub.weight.shape)
            sub.bias.data[...] = rng.uniform(-0.5, 0.5, sub.bias.shape)
            sub.running_mean[...] = rng.uniform(-0.5, 0.5, sub.running_mean.shape)
            sub.running_var[...] = rng.uniform(0.5, 2.0, sub.running_var.shape)


# --------------------------------------------------------------------------------------------
# Conv2d
# --------------------------------------------------------------------------------------------
#: (in, out, kernel, stride, padding, dilation, groups, bias, (H, W)); N = 2.
GRADCHECK_CONV = [
    (2, 3, 3, 1, 0, 1, 1, True, (5, 5)),
    (2, 3, 3, 1, 1, 1, 1, True, (5, 4)),
    (2, 2, 3, 2, 1, 1, 1, True, (6, 5)),            # stride 2, uneven
    (2, 2, 3, 3, 2, 1, 1, True, (7, 8)),            # stride 3, padding 2
    (2, 2, 3, 1, "same", 1, 1, True, (5, 4)),
    (2, 2, (2, 3), 1, "same", 1, 1, True, (4, 5)),   # even kernel "same" (asymmetric pad)
    (2, 2, 3, 1, 2, 2, 1, True, (5, 5)),            # dilation 2
    (4, 4, 3, 1, 1, 1, 2, True, (4, 4)),            # groups 2
    (3, 3, 3, 2, 1, 1, 3, True, (5, 5)),            # depthwise
    (2, 3, (3, 2), (1, 2), (1, 0), 1, 1, False, (5, 5)),  # non-square, bias off
    (2, 2, (1, 3), (2, 1), (0, 1), (1, 2), 1, False, (5, 6)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", GRADCHECK_CONV, ids=conv_id)
def test_conv2d(cfg, backend, rng):
    cin, cout, k, s, p, d, g, bias, (h, w) = cfg
    layer = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias,
                      backend=backend, rng=1)
    assert_gradcheck(layer, rng.standard_normal((2, cin, h, w)))


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
POOLS = [
    ("max_k2", lambda b: nn.MaxPool2d(2, backend=b), (2, 2, 6, 6)),
    ("max_k3_s2_p1_overlap", lambda b: nn.MaxPool2d(3, stride=2, padding=1, backend=b),
     (2, 2, 7, 7)),
    ("max_k23_s1_p1_nonsquare", lambda b: nn.MaxPool2d((2, 3), stride=(1, 2), padding=1,
                                                       backend=b), (1, 2, 5, 6)),
    ("avg_k2", lambda b: nn.AvgPool2d(2, backend=b), (2, 2, 6, 6)),
    ("avg_k3_s2_p1_incl", lambda b: nn.AvgPool2d(3, stride=2, padding=1, backend=b),
     (2, 2, 7, 7)),
    ("avg_k3_s2_p1_excl", lambda b: nn.AvgPool2d(3, stride=2, padding=1,
                                                 count_include_pad=False, backend=b),
     (2, 2, 7, 7)),
    ("avg_k32_s1_p10_excl_overlap", lambda b: nn.AvgPool2d((3, 2), stride=1, padding=(1, 0),
                                                           count_include_pad=False, backend=b),
     (1, 2, 5, 5)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make, shape", [p[1:] for p in POOLS], ids=[p[0] for p in POOLS])
def test_pooling(make, shape, backend, rng):
    assert_gradcheck(make(backend), spaced(shape, rng))


@pytest.mark.parametrize("output_size, shape", [(1, (2, 3, 5, 4)), (3, (2, 2, 7, 7)),
                                                ((2, 3), (1, 2, 5, 7)), (4, (1, 2, 3, 5))])
def test_adaptive_avg_pool(output_size, shape, rng):
    assert_gradcheck(nn.AdaptiveAvgPool2d(output_size), rng.standard_normal(shape))


# --------------------------------------------------------------------------------------------
# Dense, shape and element-wise layers (no kernel backend involved)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias, rng):
    assert_gradcheck(nn.Linear(5, 4, bias=bias, rng=2), rng.standard_normal((3, 5)))


def test_flatten(rng):
    assert_gradcheck(nn.Flatten(), rng.standard_normal((2, 3, 2, 2)))


@pytest.mark.parametrize("make", [nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.Sigmoid, nn.Tanh],
                         ids=["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation(make, rng):
    x = spaced((3, 4, 5), rng, low=0.05, high=3.0)
    assert_gradcheck(make(), x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dropout(training, rng):
    layer = nn.Dropout(0.4, rng=3)
    layer.train(training)
    x = rng.standard_normal((4, 6))
    assert_gradcheck(layer, x)
    if training:  # the check is meaningful only if the mask really dropped something
        y = nn.Dropout(0.4, rng=3)(x)
        assert 0 < np.count_nonzero(y == 0) < y.size


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind, shape", [("1d", (5, 3)), ("1d", (4, 3, 2)), ("2d", (3, 2, 3, 3))],
                         ids=["1d_NC", "1d_NCL", "2d"])
def test_batchnorm(kind, shape, training, rng):
    layer = (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(shape[1])
    randomise_batchnorm(layer, rng)
    layer.train(training)
    assert_gradcheck(layer, rng.standard_normal(shape))


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy(label_smoothing, rng):
    logits = rng.standard_normal((4, 5)) * 2
    assert_gradcheck(nn.CrossEntropyLoss(label_smoothing=label_smoothing), logits,
                     np.array([0, 4, 2, 2]))


def test_mse(rng):
    assert_gradcheck(nn.MSELoss(), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))


# --------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_small_model(backend, rng):
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, backend=backend, rng=4), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend), nn.Flatten(), nn.Linear(3 * 3 * 3, 4, rng=5))
    assert_gradcheck(model, spaced((2, 2, 6, 6), rng))


BLOCKS = ([pytest.param(2, 3, 2, b, id=f"downsample-{b}") for b in BACKENDS]
          + [pytest.param(2, 2, 1, "im2col", id="identity-im2col")])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("in_ch, out_ch, stride, backend", BLOCKS)
def test_basic_block(in_ch, out_ch, stride, backend, training, rng):
    block = nn.BasicBlock(in_ch, out_ch, stride=stride, backend=backend, rng=6)
    assert (block.downsample is not None) == (stride != 1)
    randomise_batchnorm(block, rng)
    block.train(training)
    assert_gradcheck(block, rng.standard_normal((2, in_ch, 5, 5)))


# --------------------------------------------------------------------------------------------
# The check itself can fail
# --------------------------------------------------------------------------------------------
class ReLUThatForgetsTheMask(nn.ReLU):
    def backward(self, dy):
        super().backward(dy)
        return dy


class LinearThatForgetsTheBias(nn.Linear):
    def backward(self, dy):
        self._require_forward(self._x)
        self.weight.grad += dy.T @ self._x
        return dy @ self.weight.data


class ConvWithDoubledWeightGrad(nn.Conv2d):
    def backward(self, dy, need_input_grad=True):
        before = self.weight.grad.copy()
        dx = super().backward(dy, need_input_grad)
        self.weight.grad += self.weight.grad - before
        return dx


def test_gradcheck_detects_wrong_input_gradient(rng):
    result = minicnn.gradcheck(ReLUThatForgetsTheMask(), spaced((3, 4), rng))
    assert result.errors["input"] > 1e-2
    assert not result.passed()


def test_gradcheck_detects_missing_parameter_gradient(rng):
    result = minicnn.gradcheck(LinearThatForgetsTheBias(4, 3, rng=0), rng.standard_normal((2, 4)))
    assert result.errors["input"] < GRADCHECK_TOL and result.errors["weight"] < GRADCHECK_TOL
    assert result.errors["bias"] > 0.5


def test_gradcheck_detects_scaled_weight_gradient(rng):
    layer = ConvWithDoubledWeightGrad(2, 2, 3, padding=1, backend="im2col", rng=0)
    result = minicnn.gradcheck(layer, rng.standard_normal((1, 2, 4, 4)))
    assert result.errors["weight"] > 0.1
    assert result.errors["input"] < GRADCHECK_TOL and result.errors["bias"] < GRADCHECK_TOL


def test_gradcheck_leaves_module_untouched(rng):
    layer = nn.Conv2d(2, 2, 3, backend="im2col", rng=0)
    before = layer.state_dict()
    minicnn.gradcheck(layer, rng.standard_normal((1, 2, 4, 4)))
    after = layer.state_dict()
    assert all(np.array_equal(before[k], after[k]) and after[k].dtype == np.float32
               for k in before)
    assert not layer.weight.grad.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_of_a_model_that_has_already_run(backend, rng):
    """gradcheck deep-copies the module; that must work after the model has run forward
    (e.g. checking a trained model, or ``copy.deepcopy(model)`` to keep a best checkpoint)."""
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, backend=backend, rng=0), nn.ReLU(),
                          nn.AvgPool2d(2, backend=backend))
    x = spaced((1, 2, 4, 4), rng)
    model(x.astype(np.float32))
    assert minicnn.gradcheck(model, x).max_error < GRADCHECK_TOL


def test_gradcheck_loss_needs_target(rng):
    with pytest.raises(ValueError, match="target"):
        minicnn.gradcheck(nn.MSELoss(), rng.standard_normal((2, 2)))
