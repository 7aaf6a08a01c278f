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
    # (8 - 3) / 2 and (9 - 3) / 2: the height does not divide evenly, so the output size must
    # round *down* (the last input row is never read): 3 rows, not 4.
    ("3x3, stride 2, padding 0 on 8x9: H_out = (8 - 3) // 2 + 1 = 3 (rounded down)",
     (1, 2, 8, 9), (2, 2, 3, 3), 2, 0),
    ("3x3 kernel, stride 3, padding 1 on 7x7: H_out = (7 + 2 - 3) // 3 + 1 = 3",
     (2, 1, 7, 7), (2, 1, 3, 3), 3, 1),
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
    """``fn(parameters, lr, weight_decay)`` (in place) against one ``optim.SGD`` step.

    The weights must match ``optim.SGD(lr, weight_decay=...)`` exactly. For the biases two
    conventions are right and both are accepted: decaying them like every other parameter
    (what ``optim.SGD`` and PyTorch's ``weight_decay`` do) or leaving them undecayed (common
    practice, since a bias does not scale the input and an L2 pull on it regularises
    little); the check prints which one it found. A weight_decay of 0 must give plain SGD.
    """
    lr, weight_decay = 0.1, 0.05
    mine = nn.Linear(4, 3, rng=0, dtype=np.float64)
    theirs = nn.Linear(4, 3, rng=0, dtype=np.float64)
    undecayed = nn.Linear(4, 3, rng=0, dtype=np.float64)
    for layer in (mine, theirs, undecayed):
        # A non-zero bias (a fresh layer's is 0), so decaying it or not makes a difference.
        layer.bias.data[...] = _rng(10).standard_normal(layer.bias.data.shape)
        for index, p in enumerate(layer.parameters()):
            p.grad[...] = _rng(index).standard_normal(p.data.shape)
    before = [p.data.copy() for p in mine.parameters()]
    fn(mine.parameters(), lr, weight_decay)
    library_weight_decay_step(theirs.parameters(), lr, weight_decay)
    library_weight_decay_step(undecayed.parameters(), lr, 0.0)
    weight, bias = mine.parameters()
    for name, p, start in (("weight", weight, before[0]), ("bias", bias, before[1])):
        if np.array_equal(p.data, start):
            raise AssertionError(f"{name} did not change: update each p.data in place "
                                 "(p.data -= ...)")
    compare(f"weight after one step of lr {lr}, weight_decay {weight_decay}", weight.data,
            theirs.weight.data, rtol=1e-12)
    bias_decayed = np.allclose(bias.data, theirs.bias.data, rtol=1e-12, atol=0)
    bias_plain = np.allclose(bias.data, undecayed.bias.data, rtol=1e-12, atol=0)
    if not (bias_decayed or bias_plain):
        compare(f"bias after one step of lr {lr}, weight_decay {weight_decay} (decayed like "
                f"the weight; leaving the bias undecayed is accepted too)", bias.data,
                theirs.bias.data, rtol=1e-12)
    # Plain SGD when weight_decay is 0 (catches a decay that ignores its argument).
    plain_mine = nn.Linear(4, 3, rng=0, dtype=np.float64)
    plain_mine.bias.data[...] = _rng(10).standard_normal(plain_mine.bias.data.shape)
    for index, p in enumerate(plain_mine.parameters()):
        p.grad[...] = _rng(index).standard_normal(p.data.shape)
    fn(plain_mine.parameters(), lr, 0.0)
    compare(f"weight after one step of lr {lr}, weight_decay 0 (plain SGD)",
            plain_mine.weight.data, undecayed.weight.data, rtol=1e-12)
    print("weight decay on the bias: " + (
        "decayed like the weights (as optim.SGD and torch.optim.SGD do)" if bias_decayed else
        "not decayed (a common convention; optim.SGD decays every parameter it is given)"))


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


# ============================================================================================
# The fast parts (issue 23, item 3): 01, 03, 09, 10, 11 and 12's optimisers. Each check runs
# the learner's function on cases chosen so that the usual wrong answers give a wrong shape,
# dtype or value, and says which case and what is wrong.


def _require_array(what: str, result) -> np.ndarray:
    if result is None:
        raise AssertionError(f"{what}: got None -- did the function forget to return it?")
    return np.asarray(result)


def _require_dtype(what: str, result: np.ndarray, dtype, why: str) -> None:
    if result.dtype != np.dtype(dtype):
        raise AssertionError(f"{what}: dtype {result.dtype}, expected {np.dtype(dtype)} ({why})")


# --------------------------------------------------------------------------------------------
# 01: from image-file layout (NHWC, uint8) to network input (NCHW, float32, normalised)


def library_to_network_input(images, mean, std):
    """``(images / 255 - mean[c]) / std[c]``, channels moved first, in float32.

    images (N, H, W, C) uint8; mean, std: C floats each, in units of the [0, 1] pixel scale
    -> (N, C, H, W) float32.
    """
    x = images.transpose(0, 3, 1, 2).astype(np.float32, order="C") / np.float32(255)
    mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(std, dtype=np.float32)[None, :, None, None]
    return (x - mean) / std


def check_to_network_input(fn) -> None:
    """``fn(images, mean, std) -> x`` against ``library_to_network_input``: a colour batch
    whose H, W and C all differ (a reshape instead of a transpose, or a mean applied along the
    wrong axis, shows), with a different mean and std per channel, and a grayscale batch with
    MNIST's statistics. The result must be float32, C-contiguous (NCHW in memory, not a
    transposed view of the file's NHWC order), and the input left as it was."""
    rng = _rng(1)
    cases = [
        ("colour, 2 images of 5x7 (N, H, W, C) = (2, 5, 7, 3)",
         rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8), (0.49, 0.48, 0.45),
         (0.25, 0.24, 0.26)),
        ("grayscale, 3 images of 4x6 with MNIST's mean and std",
         rng.integers(0, 256, (3, 4, 6, 1), dtype=np.uint8), (0.1307,), (0.3081,)),
    ]
    for name, images, mean, std in cases:
        what = f"to_network_input, case '{name}'"
        original = images.copy()
        got = _require_array(what, fn(images, mean, std))
        expected = library_to_network_input(original, mean, std)
        compare(f"{what}: x", got, expected, rtol=1e-5)
        _require_dtype(f"{what}: x", got, np.float32,
                       "a float64 mean or std array, or dividing by a float64, promotes the "
                       "whole batch to twice the memory; cast them with np.float32")
        if not got.flags.c_contiguous:
            raise AssertionError(
                f"{what}: the values are right, but x is not C-contiguous (strides "
                f"{got.strides}): it still has the file's NHWC order in memory, as transpose "
                "left it (astype and arithmetic keep an array's memory order), so every layer "
                "reading it strides through memory; make the copy in NCHW order: "
                "astype(np.float32, order='C') or np.ascontiguousarray")
        if not np.array_equal(images, original):
            raise AssertionError(f"{what}: the function changed its input images; compute a "
                                 "new array instead")


# --------------------------------------------------------------------------------------------
# 03: im2col


def library_im2col(x, kernel_size, stride, padding):
    """``minicnn.kernels.im2col.im2col`` without dilation: ``(cols, (out_h, out_w))``."""
    from minicnn.kernels.im2col import im2col

    return im2col(x, tuple(kernel_size), tuple(stride), tuple(padding), (1, 1))


IM2COL_CASES = [
    # name, x shape (N, C, H, W), kernel (kH, kW), stride (sH, sW), padding (top, bottom,
    # left, right)
    ("3x3, stride 1, no padding, one 4x5 image", (1, 1, 4, 5), (3, 3), (1, 1), (0, 0, 0, 0)),
    ("2x3 kernel, stride (1, 2), padding (0, 1, 2, 0), 2 images of 3 channels, 5x7",
     (2, 3, 5, 7), (2, 3), (1, 2), (0, 1, 2, 0)),
    ("3x3, stride 2, padding 1 on 8x7: the stride does not divide, a row is left over",
     (2, 2, 8, 7), (3, 3), (2, 2), (1, 1, 1, 1)),
]


def check_im2col(fn) -> None:
    """``fn(x, kernel_size, stride, padding) -> (cols, (out_h, out_w))`` against minicnn's
    ``im2col``, on a non-square kernel with different strides along H and W and lopsided
    padding (swapped kH/kW, swapped strides or padding in the wrong order show), a stride that
    does not divide, and a float32 input whose dtype must be kept."""
    for name, x_shape, kernel, stride, padding in IM2COL_CASES:
        what = f"im2col, case '{name}'"
        x = _rng(len(name)).standard_normal(x_shape).astype(np.float32)
        cols, out_size = _require_tuple(what, fn(x.copy(), kernel, stride, padding), 2)
        expected_cols, expected_size = library_im2col(x, kernel, stride, padding)
        if tuple(int(v) for v in np.atleast_1d(out_size)) != tuple(expected_size):
            raise AssertionError(f"{what}: (out_h, out_w) = {out_size}, expected "
                                 f"{tuple(expected_size)} = ((H + top + bottom - kH) // sH + 1, "
                                 f"(W + left + right - kW) // sW + 1)")
        cols = _require_array(f"{what}: cols", cols)
        compare(f"{what}: cols (rows: (c, a, b); columns: (n, i, j))", cols, expected_cols)
        _require_dtype(f"{what}: cols", cols, x.dtype, "cols must keep the input's dtype: "
                       "allocate it with dtype=x.dtype")


# --------------------------------------------------------------------------------------------
# 09: a parallel Numba kernel, fused bias + ReLU

from numba import njit, prange  # noqa: E402  (imported here: only the 09 exercise needs it)


@njit(parallel=True)
def library_bias_relu(x, bias):
    """y[n, c, h, w] = max(x[n, c, h, w] + bias[c], 0) in a new array of x's dtype, compiled
    by ``numba.njit(parallel=True)`` on first use (as the exercise's kernel must be).

    x (N, C, H, W), bias (C,) -> y (N, C, H, W).
    """
    n_images, channels, height, width = x.shape
    y = np.empty_like(x)
    for plane in prange(n_images * channels):          # one (image, channel) plane per task
        n, c = plane // channels, plane % channels
        b = bias[c]
        for h in range(height):
            for w in range(width):
                value = x[n, c, h, w] + b
                y[n, c, h, w] = value if value > 0 else 0
    return y


def check_bias_relu(fn) -> None:
    """``fn(x, bias) -> y`` on float32 NCHW batches: ``y = max(x + bias[c], 0)`` in a new
    float32 array, x unchanged, and ``fn`` compiled by ``numba.njit(parallel=True)``.

    The batches have fewer images than channels and H, W, C all different, so a bias indexed
    by the image or by a column still runs and is caught by its values. The cases run first
    through the kernel's Python source (``fn.py_func``, where ``prange`` is ``range``): an
    index out of bounds is an ``IndexError`` there (compiled code reads past the array
    silently), and a stub raises ``NotImplementedError`` before anything is compiled. Then
    the compiled kernel runs the same cases.
    """
    rng = _rng(9)
    cases = []
    for name, shape in (("2 images, 3 channels of 5x7", (2, 3, 5, 7)),
                        ("1 image, 4 channels of 6x1", (1, 4, 6, 1))):
        cases.append((name, rng.standard_normal(shape).astype(np.float32),
                      rng.standard_normal(shape[1]).astype(np.float32)))
    python_source = getattr(fn, "py_func", fn)
    for version, kernel in (("as Python", python_source), ("compiled", fn)):
        if version == "compiled":
            options = getattr(fn, "targetoptions", None)
            if options is None:
                raise AssertionError("bias_relu: the values are right, but it is plain Python, "
                                     "not a compiled kernel: decorate it with "
                                     "@njit(parallel=True)")
            if not options.get("parallel"):
                raise AssertionError("bias_relu: the values are right, but it is compiled "
                                     "without parallel=True, so prange runs on one thread: "
                                     "use @njit(parallel=True)")
        for name, x, bias in cases:
            what = f"bias_relu ({version}), case '{name}'"
            original = x.copy()
            got = _require_array(f"{what}: y", kernel(x, bias))
            if not np.array_equal(x, original):
                raise AssertionError(f"{what}: the kernel changed its input x; write into a "
                                     "new array (np.empty_like(x))")
            compare(f"{what}: y", got, np.maximum(original + bias[None, :, None, None], 0),
                    rtol=1e-6)
            _require_dtype(f"{what}: y", got, np.float32,
                           "a float64 output doubles the bytes written; np.empty_like(x) "
                           "keeps x's dtype")


# --------------------------------------------------------------------------------------------
# 10: saliency maps for a whole batch


def library_saliency_maps(net, images, classes):
    """``max over channels of |d logit[n, classes[n]] / d images[n]|``, one backward pass.

    images (N, C, H, W), classes (N,) ints -> (N, H, W), images' dtype. The parameter
    gradients that backward accumulates are zeroed again afterwards.
    """
    logits = net(images)
    dy = np.zeros_like(logits)
    dy[np.arange(len(images)), np.asarray(classes)] = 1
    dx = net.backward(dy)
    net.zero_grad()
    return np.abs(dx).max(axis=1)


def check_saliency_maps(fn) -> None:
    """``fn(net, images, classes) -> (N, H, W)`` against ``library_saliency_maps`` on a small
    float64 network with 3 input channels (the channel reduction matters), a different class
    for each image, and the parameter gradients required to be zero afterwards."""
    rng = _rng(10)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=0, dtype=np.float64,
                                  backend="reference"), nn.ReLU(backend="reference"),
                        nn.Flatten(), nn.Linear(4 * 5 * 6, 5, rng=0, dtype=np.float64,
                                                backend="reference"))
    images = rng.standard_normal((3, 3, 5, 6))
    classes = np.array([2, 0, 4])
    expected = library_saliency_maps(net, images.copy(), classes)
    net.zero_grad()
    got = _require_array("saliency_maps", fn(net, images.copy(), classes.copy()))
    compare("saliency_maps, 3 images of 3 channels, classes [2, 0, 4]: saliency "
            "(N, H, W), the largest |gradient| over the channels", got, expected, rtol=1e-9)
    dirty = [name for name, p in net.named_parameters() if np.any(p.grad != 0)]
    if dirty:
        raise AssertionError(f"saliency_maps: the saliency is right, but it left gradients in "
                             f"the parameters ({', '.join(dirty)}); the next optimiser step "
                             f"would use them: call net.zero_grad() after the backward pass")


# --------------------------------------------------------------------------------------------
# 11: the depthwise convolution forward


def library_depthwise_conv2d(x, weight, stride=1, padding=0):
    """``Conv2d(C, C, k, groups=C, bias=False)``'s forward (reference kernel).

    x (N, C, H, W), weight (C, 1, kH, kW) -> y (N, C, H_out, W_out).
    """
    y, _ = reference.conv2d_forward(x, weight, None, stride=(stride, stride),
                                    padding=(padding,) * 4, dilation=(1, 1),
                                    groups=x.shape[1])
    return y


DEPTHWISE_CASES = [
    # name, x shape, kernel (kH, kW), stride, padding
    ("3x3, stride 1, padding 1, 3 channels of 6x5", (2, 3, 6, 5), (3, 3), 1, 1),
    ("2x3 kernel, stride 2, no padding on 7x8: a row left over", (1, 4, 7, 8), (2, 3), 2, 0),
    ("3x3, stride 2, padding 1, 2 channels of 5x5", (2, 2, 5, 5), (3, 3), 2, 1),
]


def check_depthwise_conv2d(fn) -> None:
    """``fn(x, weight, stride, padding) -> y`` against ``Conv2d(groups=C)`` (reference
    backend): each channel filtered by its own kernel, nothing summed across channels, on a
    non-square kernel and a stride that does not divide."""
    for name, x_shape, kernel, stride, padding in DEPTHWISE_CASES:
        rng = _rng(len(name))
        x = rng.standard_normal(x_shape)
        weight = rng.standard_normal((x_shape[1], 1) + kernel)
        layer = nn.Conv2d(x_shape[1], x_shape[1], kernel, stride=stride, padding=padding,
                          groups=x_shape[1], bias=False, backend="reference",
                          dtype=np.float64)
        layer.weight.data[...] = weight
        got = _require_array(f"depthwise_conv2d, case '{name}'",
                             fn(x.copy(), weight.copy(), stride=stride, padding=padding))
        compare(f"depthwise_conv2d, case '{name}': y", got, layer(x))


# --------------------------------------------------------------------------------------------
# 12: the momentum and Adam update rules, step by step against minicnn.optim


def _parameter(array) -> Parameter:
    return Parameter(np.array(array, dtype=np.float64, copy=True))


def library_sgd_momentum_step(param, grad, velocity, lr, momentum):
    """One step of ``optim.SGD(lr=lr, momentum=momentum)``, in place on ``param`` and on
    ``velocity`` (its momentum buffer; zeros before the first step)."""
    p = Parameter(param)                     # shares param's memory: the step updates it
    p.grad = grad
    sgd = optim.SGD([p], lr=lr, momentum=momentum)
    # PyTorch starts the buffer at the first gradient; from zeros, momentum * 0 + g is the same.
    sgd.state[0] = {"momentum_buffer": velocity}
    sgd.step()


def library_adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps):
    """Step number ``step`` (1 for the first) of ``optim.Adam``, in place on ``param``,
    ``exp_avg`` and ``exp_avg_sq`` (zeros before the first step)."""
    p = Parameter(param)
    p.grad = grad
    adam = optim.Adam([p], lr=lr, betas=(beta1, beta2), eps=eps)
    adam.state[0] = {"step": np.array(step - 1, dtype=np.int64), "exp_avg": exp_avg,
                     "exp_avg_sq": exp_avg_sq}
    adam.step()


def _in_place(what: str, after, before, name: str, how: str) -> None:
    if np.array_equal(after, before):
        raise AssertionError(f"{what}: {name} did not change: update it in place ({how}); "
                             f"the caller keeps it between steps")


def check_sgd_momentum_step(fn) -> None:
    """``fn(param, grad, velocity, lr, momentum)`` (in place on param and velocity) over six
    steps against ``optim.SGD(momentum=...)``. The learning rate changes between steps, as a
    schedule would change it, so a velocity that already holds ``lr * g`` shows."""
    rng = _rng(12)
    momentum = 0.9
    rates = [0.1, 0.1, 0.05, 0.05, 0.01, 0.01]
    param = rng.standard_normal((3, 4))
    velocity = np.zeros_like(param)
    theirs = _parameter(param)
    sgd = optim.SGD([theirs], lr=rates[0], momentum=momentum)
    for step, lr in enumerate(rates, start=1):
        grad = rng.standard_normal(param.shape)
        what = f"sgd_momentum_step, step {step} (lr {lr}, momentum {momentum})"
        before_param, before_velocity = param.copy(), velocity.copy()
        fn(param, grad.copy(), velocity, lr, momentum)
        theirs.grad = grad
        sgd.param_groups[0]["lr"] = lr
        sgd.step()
        _in_place(what, param, before_param, "param", "param -= ...")
        _in_place(what, velocity, before_velocity, "velocity", "velocity *= ...; velocity += ...")
        compare(f"{what}: velocity", velocity, sgd.state[0]["momentum_buffer"], rtol=1e-12)
        compare(f"{what}: param", param, theirs.data, rtol=1e-12)


ADAM_CASES = [
    # name, gradient scale, lr, beta1, beta2, eps
    ("gradients of order 1, lr 0.01", 1.0, 0.01, 0.9, 0.999, 1e-8),
    ("gradients of order 1e-6, where eps and its place matter", 1e-6, 0.01, 0.9, 0.999, 1e-8),
    ("betas (0.5, 0.9), lr 0.1", 1.0, 0.1, 0.5, 0.9, 1e-8),
]


def check_adam_step(fn) -> None:
    """``fn(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)`` (in place on the
    three arrays) over five steps against ``optim.Adam``, comparing both moment estimates and
    the parameters after every step. The first steps, where the bias correction is largest,
    and tiny gradients, where ``eps`` outside the square root matters, are in the cases."""
    for case, (name, scale, lr, beta1, beta2, eps) in enumerate(ADAM_CASES):
        rng = _rng(120 + case)
        param = rng.standard_normal((2, 5))
        exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
        theirs = _parameter(param)
        adam = optim.Adam([theirs], lr=lr, betas=(beta1, beta2), eps=eps)
        for step in range(1, 6):
            grad = scale * rng.standard_normal(param.shape)
            what = f"adam_step, case '{name}', step {step}"
            before = param.copy(), exp_avg.copy(), exp_avg_sq.copy()
            fn(param, grad.copy(), exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)
            theirs.grad = grad
            adam.step()
            for array, old, label, how in ((param, before[0], "param", "param -= ..."),
                                           (exp_avg, before[1], "exp_avg", "exp_avg *= ..."),
                                           (exp_avg_sq, before[2], "exp_avg_sq",
                                            "exp_avg_sq *= ...")):
                _in_place(what, array, old, label, how)
            compare(f"{what}: exp_avg (the running mean of the gradients)", exp_avg,
                    adam.state[0]["exp_avg"], rtol=1e-12)
            compare(f"{what}: exp_avg_sq (the running mean of the squared gradients)",
                    exp_avg_sq, adam.state[0]["exp_avg_sq"], rtol=1e-12)
            compare(f"{what}: param", param, theirs.data, rtol=1e-10)
