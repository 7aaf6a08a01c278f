"""The checks and the library versions behind the tutorials' code-writing exercises.

Tutorial plumbing, not part of minicnn. Each ``check_*`` takes the learner's function, runs it
on a few cases chosen to catch the usual mistakes (a stride or padding ignored, a sum over the
wrong axes, ``=`` where overlapping windows need ``+=``, a missing ``1/N``, an overflow), and
raises ``AssertionError`` saying which case, which output and how wrong. Backward passes are
also run through ``minicnn.gradcheck`` (float64 central differences), so they are checked
against calculus, not only against the library. Each ``library_*`` function is what a
tutorial carries on with until the learner's version passes (see
``tutorial_tools.check_exercise``).

The tests (``tests/test_tutorial_exercises.py``) feed every check the worked solution, which
must pass, and deliberately wrong answers, which must be rejected.
"""

from __future__ import annotations

import numpy as np

import minicnn
from minicnn import nn, optim
from minicnn.kernels import reference
from minicnn.nn.module import Module, Parameter
from tutorial_tools import compare

GRADCHECK_TOLERANCE = 1e-6


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _require_tuple(what: str, result, length: int) -> tuple:
    if not isinstance(result, tuple) or len(result) != length:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise AssertionError(f"{what}: must return a tuple of {length} arrays, got {got}")
    return result


def _gradcheck(what: str, module: Module, x, target=None) -> None:
    result = minicnn.gradcheck(module, x, target=target)
    wrong = {name: error for name, error in result.errors.items()
             if not error < GRADCHECK_TOLERANCE}
    if wrong:
        names = ", ".join(f"{name} {error:.1e}" for name, error in wrong.items())
        raise AssertionError(f"{what}: gradcheck against central differences fails for "
                             f"{names} (relative error; a correct backward scores < "
                             f"{GRADCHECK_TOLERANCE:.0e}). Full report:\n{result}")


# --------------------------------------------------------------------------------------------
# 02: the convolution forward loop


def library_conv2d_forward(x, weight, bias, stride=1, padding=0):
    """minicnn's reference kernel, with the exercise's signature."""
    y, _ = reference.conv2d_forward(x, weight, bias, stride=(stride, stride),
                                    padding=(padding,) * 4, dilation=(1, 1), groups=1)
    return y


CONV_FORWARD_CASES = [
    # name, x shape, weight shape, stride, padding
    ("3x3, stride 1, padding 0", (2, 3, 7, 7), (4, 3, 3, 3), 1, 0),
    ("3x3, stride 2, padding 1", (2, 2, 7, 7), (3, 2, 3, 3), 2, 1),
    ("2x3 kernel on a 6x5 image, stride 1, padding 1", (1, 2, 6, 5), (2, 2, 2, 3), 1, 1),
]


def check_conv2d_forward(fn) -> None:
    """``fn(x, weight, bias, stride, padding) -> y`` against ``Conv2d`` (reference backend)."""
    for name, x_shape, w_shape, stride, padding in CONV_FORWARD_CASES:
        rng = _rng(len(name))
        x = rng.standard_normal(x_shape)
        weight = rng.standard_normal(w_shape)
        bias = rng.standard_normal(w_shape[0])
        layer = nn.Conv2d(w_shape[1], w_shape[0], w_shape[2:], stride=stride, padding=padding,
                          backend="reference", dtype=np.float64)
        layer.weight.data[...] = weight
        layer.bias.data[...] = bias
        compare(f"conv2d_forward_loop, case '{name}': y",
                fn(x.copy(), weight.copy(), bias.copy(), stride=stride, padding=padding),
                layer(x))


# --------------------------------------------------------------------------------------------
# 04: the convolution backward pass


def _gradients(layer, weight, x, dy):
    """``(dx, weight grad, bias grad)`` of ``layer`` with ``weight`` as its weight: forward
    ``x``, then backward ``dy`` from zeroed gradients."""
    layer.weight.data[...] = weight
    layer(x)
    layer.zero_grad()
    dx = layer.backward(dy)
    return dx, layer.weight.grad.copy(), layer.bias.grad.copy()


def library_conv2d_backward(x, weight, dy, stride=1, padding=0):
    """``(dx, dweight, dbias)`` from ``Conv2d.backward``, with the exercise's signature."""
    layer = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride=stride,
                      padding=padding, backend="reference", dtype=x.dtype)
    return _gradients(layer, weight, x, dy)


class ConvWithBackward(Module):
    """A convolution whose forward is the library's and whose backward is ``backward_fn``
    (the learner's), so ``minicnn.gradcheck`` can test the learner's gradients."""

    def __init__(self, weight, bias, stride, padding, backward_fn):
        super().__init__()
        self.weight, self.bias = Parameter(weight), Parameter(bias)
        self.stride, self.padding, self.backward_fn = stride, padding, backward_fn
        self._x = None

    def forward(self, x):
        self._x = x
        return library_conv2d_forward(x, self.weight.data, self.bias.data, self.stride,
                                      self.padding)

    def backward(self, dy):
        dx, dweight, dbias = _require_tuple("conv2d_backward", self.backward_fn(
            self._x, self.weight.data, dy, stride=self.stride, padding=self.padding), 3)
        self.weight.accumulate_grad(dweight)
        self.bias.accumulate_grad(dbias)
        return dx


CONV_BACKWARD_CASES = [
    ("3x3, stride 1, padding 0", (2, 3, 6, 6), (4, 3, 3, 3), 1, 0),
    ("3x3, stride 2, padding 1", (2, 2, 7, 7), (3, 2, 3, 3), 2, 1),
    # (8 - 3) is not a multiple of 2: the last input row and column are never read.
    ("3x3, stride 2, padding 0, a row left over", (1, 2, 8, 8), (2, 2, 3, 3), 2, 0),
    ("2x3 kernel, stride 1, padding 1", (2, 2, 5, 6), (3, 2, 2, 3), 1, 1),
]


def check_conv2d_backward(fn) -> None:
    """``fn(x, weight, dy, stride, padding) -> (dx, dweight, dbias)`` against
    ``Conv2d.backward`` and against ``minicnn.gradcheck``."""
    for name, x_shape, w_shape, stride, padding in CONV_BACKWARD_CASES:
        rng = _rng(len(name))
        x = rng.standard_normal(x_shape)
        weight = rng.standard_normal(w_shape)
        y = library_conv2d_forward(x, weight, np.zeros(w_shape[0]), stride, padding)
        dy = rng.standard_normal(y.shape)
        got = _require_tuple("conv2d_backward",
                             fn(x.copy(), weight.copy(), dy.copy(), stride=stride,
                                padding=padding), 3)
        expected = library_conv2d_backward(x, weight, dy, stride, padding)
        for what, mine, theirs in zip(("dx", "dweight", "dbias"), got, expected):
            compare(f"conv2d_backward, case '{name}': {what}", mine, theirs)
        _gradcheck(f"conv2d_backward, case '{name}'",
                   ConvWithBackward(weight, rng.standard_normal(w_shape[0]), stride, padding,
                                    fn), x)


# --------------------------------------------------------------------------------------------
# 05: max-pooling backward


def library_maxpool2d_backward(x, dy, kernel_size, stride):
    """``dx`` from ``MaxPool2d.backward`` (reference backend)."""
    layer = nn.MaxPool2d(kernel_size, stride=stride, backend="reference")
    layer(x)
    return layer.backward(dy)


class MaxPoolWithBackward(Module):
    """Library max pooling forward, the learner's ``backward_fn`` backward (for gradcheck)."""

    def __init__(self, kernel_size, stride, backward_fn):
        super().__init__()
        self.kernel_size, self.stride, self.backward_fn = kernel_size, stride, backward_fn
        self._x = None

    def forward(self, x):
        self._x = x
        return nn.MaxPool2d(self.kernel_size, stride=self.stride, backend="reference")(x)

    def backward(self, dy):
        return self.backward_fn(self._x, dy, self.kernel_size, self.stride)


def check_maxpool2d_backward(fn) -> None:
    """``fn(x, dy, kernel_size, stride) -> dx`` against ``MaxPool2d.backward`` (windows that
    overlap, ties) and against ``minicnn.gradcheck``."""
    rng = _rng(5)
    ties = np.zeros((1, 1, 4, 4))                 # every 2x2 window is a four-way tie
    ties[0, 0, 3, 3] = 1.0
    cases = [
        ("2x2, stride 2", rng.standard_normal((2, 3, 6, 6)), 2, 2),
        ("3x3, stride 1: windows overlap, one input can win several", 
         rng.standard_normal((1, 2, 5, 5)), 3, 1),
        ("3x3, stride 2 on 7x7", rng.standard_normal((2, 1, 7, 7)), 3, 2),
        ("2x2, stride 2, ties: the first maximum in row-major order wins", ties, 2, 2),
    ]
    for name, x, k, s in cases:
        y = nn.MaxPool2d(k, stride=s, backend="reference")(x)
        dy = rng.standard_normal(y.shape)
        compare(f"maxpool2d_backward, case '{name}': dx", fn(x.copy(), dy.copy(), k, s),
                library_maxpool2d_backward(x, dy, k, s))
    _gradcheck("maxpool2d_backward, case '3x3, stride 2'", MaxPoolWithBackward(3, 2, fn),
               rng.standard_normal((2, 2, 7, 7)))


# --------------------------------------------------------------------------------------------
# 06: softmax + cross-entropy, forward and backward


def library_softmax_cross_entropy(logits, labels):
    """``(loss, dlogits)`` from ``nn.CrossEntropyLoss``."""
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits, labels)
    return loss, loss_fn.backward()


class CrossEntropyWithBackward(nn.CrossEntropyLoss):
    """A loss whose value and gradient both come from the learner's function (gradcheck)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self._grad = fn, None

    def forward(self, logits, targets):
        loss, self._grad = _require_tuple("softmax_cross_entropy", self.fn(logits, targets), 2)
        return float(loss)

    def backward(self):
        return self._grad


def check_softmax_cross_entropy(fn) -> None:
    """``fn(logits, labels) -> (loss, dlogits)`` against ``nn.CrossEntropyLoss``, on ordinary
    and on huge logits (the naive softmax overflows there), and against ``gradcheck``."""
    rng = _rng(6)
    cases = [
        ("6 examples, 10 classes", rng.standard_normal((6, 10)) * 3, rng.integers(0, 10, 6)),
        ("one example", rng.standard_normal((1, 4)), np.array([2])),
        ("logits in the thousands (overflow test)",
         rng.standard_normal((5, 3)) * 1000 + 1000, rng.integers(0, 3, 5)),
    ]
    for name, logits, labels in cases:
        with np.errstate(all="ignore"):                # an overflow shows as inf/nan below
            got = _require_tuple("softmax_cross_entropy", fn(logits.copy(), labels.copy()), 2)
        loss, grad = library_softmax_cross_entropy(logits, labels)
        compare(f"softmax_cross_entropy, case '{name}': loss (a float)",
                np.asarray(got[0], dtype=np.float64), np.asarray(loss), rtol=1e-9)
        compare(f"softmax_cross_entropy, case '{name}': dlogits", got[1], grad)
    logits, labels = cases[0][1], cases[0][2]
    _gradcheck("softmax_cross_entropy", CrossEntropyWithBackward(fn), logits, target=labels)


# --------------------------------------------------------------------------------------------
# 07: batch-norm backward (training mode)


def library_batchnorm2d_backward(dy, x, gamma, eps=1e-5):
    """``(dx, dgamma, dbeta)`` from ``BatchNorm2d.backward`` in training mode."""
    layer = nn.BatchNorm2d(x.shape[1], eps=eps, dtype=x.dtype)
    return _gradients(layer, gamma, x, dy)


class BatchNormWithBackward(Module):
    """Training-mode batch norm: the library's forward, the learner's backward (gradcheck)."""

    def __init__(self, gamma, beta, backward_fn, eps=1e-5):
        super().__init__()
        self.weight, self.bias = Parameter(gamma), Parameter(beta)
        self.backward_fn, self.eps = backward_fn, eps
        self._x = None

    def forward(self, x):
        self._x = x
        layer = nn.BatchNorm2d(x.shape[1], eps=self.eps, dtype=x.dtype)
        layer.weight.data[...] = self.weight.data
        layer.bias.data[...] = self.bias.data
        return layer(x)

    def backward(self, dy):
        dx, dgamma, dbeta = _require_tuple("batchnorm2d_backward", self.backward_fn(
            dy, self._x, self.weight.data, eps=self.eps), 3)
        self.weight.accumulate_grad(dgamma)
        self.bias.accumulate_grad(dbeta)
        return dx


def check_batchnorm2d_backward(fn) -> None:
    """``fn(dy, x, gamma, eps) -> (dx, dgamma, dbeta)`` against ``BatchNorm2d.backward`` in
    training mode and against ``minicnn.gradcheck``."""
    rng = _rng(7)
    cases = [
        ("batch 4, 3 channels of 5x5", (4, 3, 5, 5)),
        ("batch 2, 1 channel of 3x4", (2, 1, 3, 4)),
    ]
    for name, shape in cases:
        x = rng.standard_normal(shape) * 2 + 1
        gamma = rng.uniform(0.5, 1.5, shape[1]) * rng.choice([-1, 1], shape[1])
        dy = rng.standard_normal(shape)
        got = _require_tuple("batchnorm2d_backward", fn(dy.copy(), x.copy(), gamma.copy(),
                                                        eps=1e-5), 3)
        expected = library_batchnorm2d_backward(dy, x, gamma)
        for what, mine, theirs in zip(("dx", "dgamma", "dbeta"), got, expected):
            compare(f"batchnorm2d_backward, case '{name}': {what}", mine, theirs)
    x = rng.standard_normal((4, 2, 3, 3)) * 2 + 1
    _gradcheck("batchnorm2d_backward",
               BatchNormWithBackward(np.array([1.5, -0.5]), np.array([0.1, -0.2]), fn), x)


# --------------------------------------------------------------------------------------------
# 08: the initial loss of a fresh classifier


def library_expected_initial_loss(num_classes):
    """The loss of all-zero logits, from ``nn.CrossEntropyLoss``."""
    return nn.CrossEntropyLoss()(np.zeros((1, num_classes)), np.array([0]))


def check_expected_initial_loss(fn) -> None:
    """``fn(C) -> float`` against the loss of all-zero logits, to 1e-9 (ln(C ± 1) fails)."""
    for classes in (2, 10, 47, 1000):
        truth = nn.CrossEntropyLoss()(np.zeros((3, classes)), np.array([0, 1, classes - 1]))
        answer = fn(classes)
        assert answer is not None, f"expected_initial_loss({classes}) returned None"
        assert abs(float(answer) - truth) <= 1e-9 * truth, (
            f"expected_initial_loss({classes}) = {answer!r}, but all-zero logits give a loss "
            f"of {truth:.6f}")


# --------------------------------------------------------------------------------------------
# 12: an SGD step with weight decay


def library_weight_decay_step(parameters, lr, weight_decay):
    """One step of ``optim.SGD(lr=lr, weight_decay=weight_decay)`` (no momentum)."""
    optim.SGD(parameters, lr=lr, weight_decay=weight_decay).step()


def check_weight_decay_step(fn) -> None:
    """``fn(parameters, lr, weight_decay)`` (in place) against one ``optim.SGD`` step."""
    mine = nn.Linear(4, 3, rng=0, dtype=np.float64)
    theirs = nn.Linear(4, 3, rng=0, dtype=np.float64)
    for layer in (mine, theirs):
        for index, p in enumerate(layer.parameters()):
            p.grad[...] = _rng(index).standard_normal(p.data.shape)
    before = [p.data.copy() for p in mine.parameters()]
    fn(mine.parameters(), 0.1, 0.05)
    library_weight_decay_step(theirs.parameters(), 0.1, 0.05)
    for name, a, b, start in zip(("weight", "bias"), mine.parameters(), theirs.parameters(),
                                 before):
        if np.array_equal(a.data, start):
            raise AssertionError(f"{name} did not change: update each p.data in place "
                                 "(p.data -= ...)")
        compare(f"{name} after one step of lr 0.1, weight_decay 0.05", a.data, b.data,
                rtol=1e-12)


# --------------------------------------------------------------------------------------------
# 13: a residual block's backward pass


class LearnerBlock(nn.BasicBlock):
    """A ``BasicBlock`` whose backward is the learner's ``residual_backward`` (for gradcheck)."""

    backward_fn = None

    def backward(self, dy, need_input_grad=True):
        return type(self).backward_fn(self, dy)


def library_residual_backward(block, dy):
    """``BasicBlock.backward``, with the exercise's signature."""
    return nn.BasicBlock.backward(block, dy)


def check_residual_backward(fn) -> None:
    """``fn(block, dy) -> dx`` against ``BasicBlock.backward`` (input and every parameter
    gradient) and against ``minicnn.gradcheck``."""
    rng = _rng(13)
    x = rng.standard_normal((3, 4, 5, 5))
    dy = rng.standard_normal((3, 4, 5, 5))
    theirs = nn.BasicBlock(4, 4, rng=0, dtype=np.float64)
    mine = nn.BasicBlock(4, 4, rng=0, dtype=np.float64)
    for block in (theirs, mine):
        block(x)
        block.zero_grad()
    expected = theirs.backward(dy)
    compare("residual_backward: dx", fn(mine, dy), expected, rtol=1e-9)
    for (name, a), (_, b) in zip(mine.named_parameters(), theirs.named_parameters()):
        compare(f"residual_backward: gradient of {name}", a.grad, b.grad, rtol=1e-9)
    LearnerBlock.backward_fn = staticmethod(fn)
    _gradcheck("residual_backward", LearnerBlock(2, 2, rng=1), rng.standard_normal((2, 2, 4, 4)))
