"""The tutorials' code-writing exercises: the exercise contract in ``tutorial_tools`` and the
checks in ``tutorials/exercise_checks.py``.

Every check must accept the worked solution and the library's own version, and must reject
deliberately wrong answers -- the mistakes learners really make -- with a message that names
what is wrong. These are fast unit tests: they import the checks, they do not run tutorials.
"""

from __future__ import annotations

import numpy as np
import pytest

# tutorial_helpers puts tutorials/ on sys.path, so the imports below find its modules.
from tutorial_helpers import TUTORIALS_DIR, rejects as _rejects, solution as _solution

import exercise_checks as ec  # noqa: E402
import tutorial_tools  # noqa: E402


conv_forward = _solution("02_convolution", "conv2d_forward_loop")
conv_backward = _solution("04_conv_backward", "conv2d_backward")
maxpool_backward = _solution("05_pooling", "maxpool2d_backward")
softmax_ce = _solution("06_dense_softmax_cross_entropy", "softmax_cross_entropy")
bn_backward = _solution("07_activations_batchnorm_dropout", "batchnorm2d_backward")

EXERCISES = {
    "conv2d_forward_loop": (ec.check_conv2d_forward, conv_forward, ec.library_conv2d_forward),
    "conv2d_backward": (ec.check_conv2d_backward, conv_backward, ec.library_conv2d_backward),
    "maxpool2d_backward": (ec.check_maxpool2d_backward, maxpool_backward,
                           ec.library_maxpool2d_backward),
    "softmax_cross_entropy": (ec.check_softmax_cross_entropy, softmax_ce,
                              ec.library_softmax_cross_entropy),
    "batchnorm2d_backward": (ec.check_batchnorm2d_backward, bn_backward,
                             ec.library_batchnorm2d_backward),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_check_accepts_the_solution_and_the_library(name):
    check, solution, library = EXERCISES[name]
    check(solution)
    check(library)


# ---- 02: conv forward ------------------------------------------------------------------------

def test_conv_forward_check_rejects_a_missing_bias():
    def no_bias(x, weight, bias, stride=1, padding=0):
        return conv_forward(x, weight, np.zeros_like(bias), stride, padding)
    _rejects(ec.check_conv2d_forward, no_bias, "y: relative error", "worst at index")


def test_conv_forward_check_rejects_an_ignored_stride_by_its_shape():
    def stride_one(x, weight, bias, stride=1, padding=0):
        return conv_forward(x, weight, bias, 1, padding)
    _rejects(ec.check_conv2d_forward, stride_one, "stride 2", "shape (2, 3, 7, 7)",
             "expected (2, 3, 4, 4)")


def test_conv_forward_check_rejects_a_flipped_kernel():
    def true_convolution(x, weight, bias, stride=1, padding=0):
        return conv_forward(x, weight[:, :, ::-1, ::-1], bias, stride, padding)
    _rejects(ec.check_conv2d_forward, true_convolution, "relative error")


def test_conv_forward_check_rejects_a_forgotten_return():
    _rejects(ec.check_conv2d_forward, lambda *args, **kwargs: None, "got None")


# ---- 04: conv backward -----------------------------------------------------------------------

def test_conv_backward_check_rejects_a_bias_gradient_that_forgets_the_batch():
    def first_image_only(x, weight, dy, stride=1, padding=0):
        dx, dweight, _ = conv_backward(x, weight, dy, stride, padding)
        return dx, dweight, dy[0].sum(axis=(1, 2))
    _rejects(ec.check_conv2d_backward, first_image_only, "dbias", "relative error")


def test_conv_backward_check_rejects_bias_summed_over_the_wrong_axes():
    def wrong_axes(x, weight, dy, stride=1, padding=0):
        dx, dweight, _ = conv_backward(x, weight, dy, stride, padding)
        return dx, dweight, dy.sum(axis=(2, 3))
    _rejects(ec.check_conv2d_backward, wrong_axes, "dbias: shape")


def test_conv_backward_check_rejects_an_input_gradient_that_ignores_the_stride():
    def stride_ignored(x, weight, dy, stride=1, padding=0):
        """Scatter dy as if stride were 1 (no gaps between the windows)."""
        dx, dweight, dbias = conv_backward(x, weight, dy, stride, padding)
        if stride == 1:
            return dx, dweight, dbias
        padded = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * padding,
                           x.shape[3] + 2 * padding))
        kh, kw = weight.shape[2:]
        for u in range(kh):
            for v in range(kw):
                padded[:, :, u:u + dy.shape[2], v:v + dy.shape[3]] += np.einsum(
                    "nohw,oc->nchw", dy, weight[:, :, u, v])
        return padded[:, :, padding:padding + x.shape[2], padding:padding + x.shape[3]], \
            dweight, dbias
    _rejects(ec.check_conv2d_backward, stride_ignored, "stride 2", "dx: relative error")


def test_conv_backward_check_rejects_overwriting_instead_of_adding():
    def overwrites(x, weight, dy, stride=1, padding=0):
        dx, dweight, dbias = conv_backward(x, weight, dy, stride, padding)
        padded = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * padding,
                           x.shape[3] + 2 * padding))
        out_h, out_w = dy.shape[2:]
        for u in range(weight.shape[2]):
            for v in range(weight.shape[3]):
                rows = slice(u, u + stride * out_h, stride)
                cols = slice(v, v + stride * out_w, stride)
                padded[:, :, rows, cols] = np.einsum("nohw,oc->nchw", dy, weight[:, :, u, v])
        return padded[:, :, padding:padding + x.shape[2], padding:padding + x.shape[3]], \
            dweight, dbias
    _rejects(ec.check_conv2d_backward, overwrites, "dx: relative error")


def test_conv_backward_check_runs_gradcheck_too():
    """A backward consistent with a *different* forward (the true convolution) fails."""
    seen = []

    def flipped(x, weight, dy, stride=1, padding=0):
        seen.append(1)
        return conv_backward(x, weight[:, :, ::-1, ::-1].copy(), dy, stride, padding)
    _rejects(ec.check_conv2d_backward, flipped, "relative error")
    assert seen


def test_gradcheck_wrapper_names_the_wrong_gradient():
    def bias_doubled(x, weight, dy, stride=1, padding=0):
        dx, dweight, dbias = conv_backward(x, weight, dy, stride, padding)
        return dx, dweight, 2 * dbias
    rng = np.random.default_rng(0)
    module = ec.ConvWithBackward(rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(2), 1, 0,
                                 bias_doubled)
    with pytest.raises(AssertionError) as caught:
        ec._gradcheck("conv", module, rng.standard_normal((1, 1, 5, 5)))
    assert "bias" in str(caught.value) and "weight" not in str(caught.value).split("Full")[0]


# ---- 05: max-pool backward -------------------------------------------------------------------

def test_maxpool_check_rejects_spreading_the_gradient_over_the_window():
    def everyone(x, dy, kernel_size, stride):
        dx = np.zeros_like(x)
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                dx[:, :, i * stride:i * stride + kernel_size,
                   j * stride:j * stride + kernel_size] += dy[:, :, i:i + 1, j:j + 1]
        return dx
    _rejects(ec.check_maxpool2d_backward, everyone, "dx: relative error")


def test_maxpool_check_rejects_overwriting_in_overlapping_windows():
    def overwrites(x, dy, kernel_size, stride):
        dx = np.zeros_like(x)
        n, c = x.shape[:2]
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                window = x[:, :, i * stride:i * stride + kernel_size,
                           j * stride:j * stride + kernel_size]
                r, q = np.divmod(window.reshape(n, c, -1).argmax(axis=2), kernel_size)
                a, b = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
                dx[a, b, i * stride + r, j * stride + q] = dy[:, :, i, j]
        return dx
    _rejects(ec.check_maxpool2d_backward, overwrites, "windows overlap", "dx")


def test_maxpool_check_rejects_the_last_of_tied_maxima():
    def last_wins(x, dy, kernel_size, stride):
        # Reverse each window so argmax finds the last maximum, then map back.
        flipped = x[:, :, ::-1, ::-1]
        return maxpool_backward(flipped.copy(), dy[:, :, ::-1, ::-1].copy(), kernel_size,
                                stride)[:, :, ::-1, ::-1]
    _rejects(ec.check_maxpool2d_backward, last_wins, "ties")


# ---- 06: softmax cross-entropy ---------------------------------------------------------------

def test_cross_entropy_check_rejects_a_gradient_without_the_1_over_n():
    def no_mean(logits, labels):
        loss, grad = softmax_ce(logits, labels)
        return loss, grad * len(labels)
    _rejects(ec.check_softmax_cross_entropy, no_mean, "dlogits: relative error")


def test_cross_entropy_check_rejects_the_naive_softmax():
    def naive(logits, labels):
        e = np.exp(logits)
        p = e / e.sum(axis=1, keepdims=True)
        n = len(labels)
        grad = p.copy()
        grad[np.arange(n), labels] -= 1
        return float(-np.log(p[np.arange(n), labels]).mean()), grad / n
    _rejects(ec.check_softmax_cross_entropy, naive, "overflow", "non-finite")


def test_cross_entropy_check_rejects_a_summed_loss():
    def summed(logits, labels):
        loss, grad = softmax_ce(logits, labels)
        return loss * len(labels), grad
    _rejects(ec.check_softmax_cross_entropy, summed, "loss")


# ---- 07: batch-norm backward -----------------------------------------------------------------

def test_batchnorm_check_rejects_treating_mean_and_variance_as_constants():
    def constants(dy, x, gamma, eps=1e-5):
        _, dgamma, dbeta = bn_backward(dy, x, gamma, eps)
        inv_std = 1 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)
        return dy * gamma[None, :, None, None] * inv_std, dgamma, dbeta
    _rejects(ec.check_batchnorm2d_backward, constants, "dx: relative error")


def test_batchnorm_check_rejects_a_wrong_gamma_gradient():
    def dgamma_from_x(dy, x, gamma, eps=1e-5):
        dx, _, dbeta = bn_backward(dy, x, gamma, eps)
        return dx, (dy * x).sum(axis=(0, 2, 3)), dbeta
    _rejects(ec.check_batchnorm2d_backward, dgamma_from_x, "dgamma")


def test_batchnorm_check_rejects_a_missing_mean_path():
    """Forgetting only the term that comes through the mean is caught too."""
    def no_mean_term(dy, x, gamma, eps=1e-5):
        _, dgamma, dbeta = bn_backward(dy, x, gamma, eps)
        axes = (0, 2, 3)
        inv_std = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
        x_hat = (x - x.mean(axis=axes, keepdims=True)) * inv_std
        dx_hat = dy * gamma[None, :, None, None]
        return inv_std * (dx_hat - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True)), \
            dgamma, dbeta
    _rejects(ec.check_batchnorm2d_backward, no_mean_term, "dx")


# ---- the contract: exercise() and check_exercise() -------------------------------------------

def _stub(x):
    raise NotImplementedError("fill in _stub")


def _passes(fn):
    assert fn(2) == 4, f"expected 4, got {fn(2)}"


def _reference(x):
    return 2 * x


def test_check_exercise_carries_on_with_the_reference_while_the_stub_is_empty(capsys,
                                                                               monkeypatch):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)
    assert tutorial_tools.check_exercise("double", _stub, _passes, _reference) is _reference
    out = capsys.readouterr().out
    assert "not filled in yet" in out and "library's version" in out
    assert len(out.strip().splitlines()) == 1


def test_check_exercise_reports_a_wrong_answer_and_carries_on(capsys, monkeypatch):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)
    wrong = lambda x: 3 * x  # noqa: E731
    assert tutorial_tools.check_exercise("double", wrong, _passes, _reference) is _reference
    assert "expected 4, got 6" in capsys.readouterr().out


@pytest.mark.parametrize("variable", ["MINICNN_TUTORIAL_SOLUTIONS", "MINICNN_TUTORIAL_STRICT"])
def test_check_exercise_raises_on_a_wrong_answer_when_strict(variable, monkeypatch):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(AssertionError, match="expected 4, got 6"):
        tutorial_tools.check_exercise("double", lambda x: 3 * x, _passes, _reference)


def test_check_exercise_returns_a_correct_answer(capsys, monkeypatch):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    right = lambda x: x + x  # noqa: E731
    assert tutorial_tools.check_exercise("double", right, _passes, _reference) is right
    assert "correct" in capsys.readouterr().out


def test_exercise_decorator_swaps_in_the_worked_solution_only_when_asked(monkeypatch):
    def conv2d_forward_loop(x, weight, bias, stride=1, padding=0):
        raise NotImplementedError

    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    assert tutorial_tools.exercise("02_convolution")(conv2d_forward_loop) is conv2d_forward_loop
    monkeypatch.setenv("MINICNN_TUTORIAL_SOLUTIONS", "1")
    swapped = tutorial_tools.exercise("02_convolution")(conv2d_forward_loop)
    assert swapped is not conv2d_forward_loop
    ec.check_conv2d_forward(swapped)


def test_exercise_decorator_says_which_solution_is_missing(monkeypatch):
    monkeypatch.setenv("MINICNN_TUTORIAL_SOLUTIONS", "1")
    with pytest.raises(FileNotFoundError, match="99_nothing"):
        tutorial_tools.exercise("99_nothing")(_stub)

    def not_in_the_file(x):
        raise NotImplementedError
    with pytest.raises(AttributeError, match="not_in_the_file"):
        tutorial_tools.exercise("02_convolution")(not_in_the_file)


def test_compare_names_shape_nonfinite_and_worst_element():
    with pytest.raises(AssertionError, match=r"dx: shape \(2,\), expected \(3,\)"):
        tutorial_tools.compare("dx", np.zeros(2), np.zeros(3))
    with pytest.raises(AssertionError, match="non-finite"):
        tutorial_tools.compare("dx", np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(AssertionError, match=r"worst at index \(1,\): got 3, expected 2"):
        tutorial_tools.compare("dx", np.array([1.0, 3.0]), np.array([1.0, 2.0]))
    tutorial_tools.compare("dx", np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-12]))


def test_show_and_check_return_nothing_to_echo(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("MINICNN_TUTORIAL_OUT", str(tmp_path))
    fig, _ = plt.subplots()
    assert tutorial_tools.show(fig, "empty") is None
    assert list(tmp_path.rglob("empty.png"))
    assert tutorial_tools.check("two", 2, 2) is None


# ---- 08, 12, 13 ------------------------------------------------------------------------------

initial_loss = _solution("08_training_lenet_mnist", "expected_initial_loss")
decay_step = _solution("12_training_dynamics", "sgd_step_with_weight_decay")
residual_backward = _solution("13_deeper_networks", "residual_backward")


@pytest.mark.parametrize("check, solution, library", [
    (ec.check_expected_initial_loss, initial_loss, ec.library_expected_initial_loss),
    (ec.check_weight_decay_step, decay_step, ec.library_weight_decay_step),
    (ec.check_residual_backward, residual_backward, ec.library_residual_backward),
], ids=["initial_loss", "weight_decay", "residual_backward"])
def test_later_checks_accept_the_solution_and_the_library(check, solution, library):
    check(solution)
    check(library)


def test_initial_loss_check_rejects_a_neighbouring_class_count():
    import math
    _rejects(ec.check_expected_initial_loss, lambda c: math.log(c + 1), "expected_initial_loss(2)")
    _rejects(ec.check_expected_initial_loss, lambda c: 1 / c, "all-zero logits")


def test_weight_decay_check_rejects_a_missing_or_misplaced_decay():
    def no_decay(parameters, lr, weight_decay):
        for p in parameters:
            p.data -= lr * p.grad

    def decay_not_scaled_by_lr(parameters, lr, weight_decay):
        for p in parameters:
            p.data -= lr * p.grad + weight_decay * p.data

    def returns_instead_of_updating(parameters, lr, weight_decay):
        return [p.data - lr * (p.grad + weight_decay * p.data) for p in parameters]

    _rejects(ec.check_weight_decay_step, no_decay, "weight after one step", "relative error")
    _rejects(ec.check_weight_decay_step, decay_not_scaled_by_lr, "relative error")
    _rejects(ec.check_weight_decay_step, returns_instead_of_updating, "did not change")


def test_residual_check_rejects_a_forgotten_skip_gradient():
    def body_only(block, dy):
        d = block.relu_out.backward(dy)
        for layer in (block.bn2, block.conv2, block.relu, block.bn1, block.conv1):
            d = layer.backward(d)
        return d
    _rejects(ec.check_residual_backward, body_only, "residual_backward: dx", "relative error")


def test_residual_check_rejects_a_skip_that_bypasses_the_final_relu():
    def skip_before_relu(block, dy):
        d_sum = block.relu_out.backward(dy)
        d = d_sum
        for layer in (block.bn2, block.conv2, block.relu, block.bn1, block.conv1):
            d = layer.backward(d)
        return d + dy                                   # dy instead of d_sum on the skip
    _rejects(ec.check_residual_backward, skip_before_relu, "dx")


def test_check_compares_counts_and_shapes_exactly(capsys, monkeypatch):
    monkeypatch.setenv("MINICNN_TUTORIAL_STRICT", "1")       # a wrong answer raises
    tutorial_tools.check("bytes", 1_572_864, np.int64(1_572_864))
    tutorial_tools.check("shape", (27, 32), (27, 32))
    with pytest.raises(AssertionError, match="expected 1572864"):
        tutorial_tools.check("bytes", 1_572_860, 1_572_864)      # within rtol 1e-5, still wrong
    with pytest.raises(AssertionError, match="expected"):
        tutorial_tools.check("shape", (27, 31), (27, 32))
    tutorial_tools.check("a float", 0.25 + 1e-9, 0.25)            # floats keep a tolerance
    with pytest.raises(AssertionError):
        tutorial_tools.check("a float", 0.26, 0.25)


def test_check_reports_a_wrong_short_answer_and_carries_on(capsys, monkeypatch):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)
    assert tutorial_tools.check("bytes", 1_572_860, 1_572_864) is None
    assert tutorial_tools.check("an answer", None, 3) is None
    out = capsys.readouterr().out
    assert "got 1572860, expected 1572864" in out and "replace the None" in out
    monkeypatch.setenv("MINICNN_TUTORIAL_SOLUTIONS", "1")     # the notebook test's setting
    with pytest.raises(AssertionError, match="expected 1572864"):
        tutorial_tools.check("bytes", 1_572_860, 1_572_864)


# ---- any exception from the learner's code becomes a message --------------------------------

def _conv_forward_missing_a_transpose(x, weight, bias, stride=1, padding=0):
    """A plausible bug: im2col's column matrix times the weight matrix without its ``.T``."""
    from numpy.lib.stride_tricks import sliding_window_view
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    view = sliding_window_view(padded, weight.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, out_h, out_w = view.shape[:4]
    cols = view.transpose(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, -1)
    y = cols @ weight.reshape(weight.shape[0], -1)              # should be (...).T
    return y.reshape(n, out_h, out_w, -1).transpose(0, 3, 1, 2) + bias[None, :, None, None]


def _conv_forward_reading_past_the_end(x, weight, bias, stride=1, padding=0):
    """A plausible bug: one output row too many, which indexes past the padded input."""
    y = conv_forward(x, weight, bias, stride, padding)
    rows = np.arange(y.shape[2] + 1) * stride + weight.shape[2] - 1 + x.shape[2]
    return y + x[0, 0, rows[-1:], 0].sum() * 0          # an index past the end of H


def _conv_forward_with_a_missing_parameter(x, weight, bias):
    """A plausible bug: the signature lost stride and padding."""
    return conv_forward(x, weight, bias)


@pytest.mark.parametrize("wrong, error, hint", [
    (_conv_forward_missing_a_transpose, "ValueError", "transpose"),
    (_conv_forward_reading_past_the_end, "IndexError", "loop ranges"),
    (_conv_forward_with_a_missing_parameter, "TypeError", "signature"),
], ids=["ValueError", "IndexError", "TypeError"])
def test_an_exception_in_the_learners_code_is_a_message_and_the_library_carries_on(
        wrong, error, hint, capsys, monkeypatch):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)
    carried_on = tutorial_tools.check_exercise("conv2d_forward_loop", wrong,
                                               ec.check_conv2d_forward,
                                               reference=ec.library_conv2d_forward)
    assert carried_on is ec.library_conv2d_forward
    out = capsys.readouterr().out
    assert f"conv2d_forward_loop raised {error}" in out, out
    assert "called as conv2d_forward_loop(" in out and "array of shape (2, 3, 7, 7)" in out, out
    assert "hint: " in out and hint in out, out
    assert "carrying on with the library's version" in out, out
    if error != "TypeError":        # the call itself failed for the TypeError: no line inside
        assert "in your code at line" in out, out


def test_an_exception_in_the_learners_code_stops_the_tutorial_when_strict(monkeypatch, capsys):
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.setenv("MINICNN_TUTORIAL_STRICT", "1")
    with pytest.raises(ValueError):
        tutorial_tools.check_exercise("conv2d_forward_loop",
                                      _conv_forward_missing_a_transpose,
                                      ec.check_conv2d_forward,
                                      reference=ec.library_conv2d_forward)
    assert "raised ValueError" in capsys.readouterr().out


def test_a_result_the_check_cannot_use_is_described(capsys, monkeypatch):
    """The learner's function returns, but a list where a tuple of arrays was expected: the
    message says what it returned."""
    monkeypatch.delenv("MINICNN_TUTORIAL_SOLUTIONS", raising=False)
    monkeypatch.delenv("MINICNN_TUTORIAL_STRICT", raising=False)

    def returns_a_number(parameters, lr, weight_decay):
        for p in parameters:
            p.data -= lr * p.grad
        return 0

    def check_that_uses_the_result(fn):
        fn([], 0.1, 0.0).shape                  # the check expected an array back

    tutorial_tools.check_exercise("step", returns_a_number, check_that_uses_the_result,
                                  reference=ec.library_weight_decay_step)
    out = capsys.readouterr().out
    assert "raised AttributeError" in out and "it returned 0" in out, out


# ---- right variants are accepted, plausible wrong ones rejected, for every exercise ---------

def test_conv_forward_check_rejects_rounding_the_output_size_up():
    """Every earlier case divided evenly, so a ceil passed; the 8x9 case does not divide."""
    def ceil_size(x, weight, bias, stride=1, padding=0):
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        padded = np.pad(x, ((0, 0), (0, 0), (padding, padding + stride),
                            (padding, padding + stride)))
        out_h = -(-(h + 2 * padding - kh) // stride) + 1          # ceil instead of floor
        out_w = -(-(w + 2 * padding - kw) // stride) + 1
        y = np.zeros((n, o, out_h, out_w))
        for i in range(out_h):
            for j in range(out_w):
                window = padded[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                y[:, :, i, j] = np.einsum("nchw,ochw->no", window, weight)
        return y + bias[None, :, None, None]
    _rejects(ec.check_conv2d_forward, ceil_size, "rounded down", "shape (1, 2, 4, 4)",
             "expected (1, 2, 3, 4)")


def test_conv_forward_check_rejects_swapped_kernel_sizes():
    def swapped(x, weight, bias, stride=1, padding=0):
        kh, kw = weight.shape[2:]
        return conv_forward(x, weight.reshape(weight.shape[:2] + (kw, kh)), bias, stride,
                            padding)
    _rejects(ec.check_conv2d_forward, swapped, "2x3 kernel", "shape")


def test_conv_forward_check_accepts_a_vectorised_version():
    from numpy.lib.stride_tricks import sliding_window_view

    def windows(x, weight, bias, stride=1, padding=0):
        padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        view = sliding_window_view(padded, weight.shape[2:], axis=(2, 3))[:, :, ::stride,
                                                                          ::stride]
        return np.einsum("nchwij,ocij->nohw", view, weight) + bias[None, :, None, None]
    ec.check_conv2d_forward(windows)


def test_conv_backward_check_accepts_a_version_written_with_einsum_per_tap():
    def per_tap(x, weight, dy, stride=1, padding=0):
        padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        dpadded = np.zeros_like(padded)
        dweight = np.zeros_like(weight)
        out_h, out_w = dy.shape[2:]
        for u in range(weight.shape[2]):
            for v in range(weight.shape[3]):
                rows = slice(u, u + stride * (out_h - 1) + 1, stride)
                cols = slice(v, v + stride * (out_w - 1) + 1, stride)
                dweight[:, :, u, v] = np.einsum("nohw,nchw->oc", dy, padded[:, :, rows, cols])
                dpadded[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dy, weight[:, :, u, v])
        h, w = x.shape[2:]
        return (dpadded[:, :, padding:padding + h, padding:padding + w], dweight,
                dy.sum(axis=(0, 2, 3)))
    ec.check_conv2d_backward(per_tap)


def test_maxpool_check_accepts_a_mask_built_per_window():
    def mask(x, dy, kernel_size, stride):
        dx = np.zeros_like(x)
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                window = x[:, :, i * stride:i * stride + kernel_size,
                           j * stride:j * stride + kernel_size]
                flat = window.reshape(window.shape[0], window.shape[1], -1)
                first = np.zeros_like(flat)
                np.put_along_axis(first, flat.argmax(axis=2)[..., None], 1.0, axis=2)
                dx[:, :, i * stride:i * stride + kernel_size,
                   j * stride:j * stride + kernel_size] += \
                    first.reshape(window.shape) * dy[:, :, i:i + 1, j:j + 1]
        return dx
    ec.check_maxpool2d_backward(mask)


def test_cross_entropy_check_accepts_log_sum_exp_written_out():
    def log_sum_exp(logits, labels):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        n = len(labels)
        grad = np.exp(log_p)
        grad[np.arange(n), labels] -= 1
        return float(-np.take_along_axis(log_p, labels[:, None], axis=1).mean()), grad / n
    ec.check_softmax_cross_entropy(log_sum_exp)


def test_batchnorm_check_accepts_the_compact_formula():
    def compact(dy, x, gamma, eps=1e-5):
        axes = (0, 2, 3)
        m = x.size // x.shape[1]
        inv_std = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
        x_hat = (x - x.mean(axis=axes, keepdims=True)) * inv_std
        dbeta = dy.sum(axis=axes)
        dgamma = (dy * x_hat).sum(axis=axes)
        dx = gamma[None, :, None, None] * inv_std / m * (
            m * dy - dbeta[None, :, None, None] - x_hat * dgamma[None, :, None, None])
        return dx, dgamma, dbeta
    ec.check_batchnorm2d_backward(compact)


def test_initial_loss_check_accepts_minus_log_of_a_uniform_probability():
    import math
    ec.check_expected_initial_loss(lambda c: -math.log(1 / c))


def test_weight_decay_check_accepts_undecayed_biases_and_says_so(capsys):
    def skip_biases(parameters, lr, weight_decay):
        for p in parameters:
            decay = weight_decay if p.data.ndim > 1 else 0.0      # biases: no decay
            p.data -= lr * (p.grad + decay * p.data)
    ec.check_weight_decay_step(skip_biases)
    assert "not decayed" in capsys.readouterr().out
    ec.check_weight_decay_step(decay_step)
    assert "decayed like the weights" in capsys.readouterr().out


def test_weight_decay_check_rejects_a_decay_that_ignores_its_argument():
    def fixed_decay(parameters, lr, weight_decay):
        for p in parameters:
            p.data -= lr * (p.grad + 0.05 * p.data)
    _rejects(ec.check_weight_decay_step, fixed_decay, "weight_decay 0 (plain SGD)")


def test_weight_decay_check_rejects_a_bias_decayed_twice():
    def bias_twice(parameters, lr, weight_decay):
        for p in parameters:
            decay = weight_decay if p.data.ndim > 1 else 2 * weight_decay
            p.data -= lr * (p.grad + decay * p.data)
    _rejects(ec.check_weight_decay_step, bias_twice, "bias after one step",
             "leaving the bias undecayed is accepted too")


def test_residual_check_accepts_the_body_walked_as_a_list():
    def as_a_list(block, dy):
        d_sum = block.relu_out.backward(dy)
        d = d_sum
        for layer in reversed([block.conv1, block.bn1, block.relu, block.conv2, block.bn2]):
            d = layer.backward(d)
        return d_sum + d
    ec.check_residual_backward(as_a_list)


# ---- 14: non-maximum suppression (the check is defined in the tutorial) ----------------------

def _nms_check():
    """``check_nms`` from tutorials/14_detection.py, without running the tutorial."""
    import ast

    from minicnn.detection import nms
    tree = ast.parse((TUTORIALS_DIR / "14_detection.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check_nms")
    namespace = {"np": np, "nms": nms}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "14_detection.py", "exec"), namespace)
    return namespace["check_nms"]


def _nms_with_order(order_of):
    """Greedy NMS whose visiting order is ``order_of(scores)``."""
    from minicnn.detection import box_iou

    def nms_fn(boxes, scores, iou_threshold):
        boxes, scores = np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, float)
        order, keep = list(order_of(scores)), []
        while order:
            best = order.pop(0)
            keep.append(best)
            order = [k for k in order
                     if box_iou(boxes[best:best + 1], boxes[k:k + 1])[0, 0] <= iou_threshold]
        return np.asarray(keep, dtype=np.int64)
    return nms_fn


def test_nms_check_states_the_tie_rule_when_it_rejects_a_reversed_argsort():
    with pytest.raises(AssertionError) as caught:
        _nms_check()(_nms_with_order(lambda scores: np.argsort(scores)[::-1]))
    assert "lower index first" in str(caught.value) and "expected" in str(caught.value)


def test_nms_check_rejects_keeping_every_box_and_accepts_a_stable_sort():
    check_nms = _nms_check()
    with pytest.raises(AssertionError, match="expected"):
        check_nms(lambda boxes, scores, iou_threshold:
                  np.argsort(-np.asarray(scores, dtype=float), kind="stable"))
    check_nms(_nms_with_order(lambda scores: np.argsort(-scores, kind="stable")))
    # lexsort by (index, -score) is the same rule written another way
    check_nms(_nms_with_order(lambda scores: np.lexsort((np.arange(len(scores)), -scores))))

