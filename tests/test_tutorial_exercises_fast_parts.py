"""The exercises where the learner writes the fast parts (issue 23, item 3): tutorial 01's
image-to-input conversion, 03's im2col, 09's parallel Numba kernel, 10's batched saliency,
11's depthwise convolution and 12's momentum and Adam steps.

For each exercise: the check accepts the worked solution, the library's version and one more
right variant written differently, and rejects at least two plausible wrong answers with a
message that names what is wrong. Fast unit tests: they import the checks, they do not run
tutorials (``test_tutorials.py`` runs those, with the stubs and with the solutions).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

# tutorial_helpers puts tutorials/ on sys.path, so the imports below find its modules.
from tutorial_helpers import rejects as _rejects, solution as _solution

import exercise_checks as ec  # noqa: E402


to_network_input = _solution("01_images_as_arrays", "to_network_input")
im2col_windows = _solution("03_im2col", "im2col_windows")
bias_relu_source = _solution("09_making_it_fast", "bias_relu")
saliency_maps = _solution("10_what_the_network_learned", "saliency_maps")
depthwise_conv2d = _solution("11_efficient_architectures", "depthwise_conv2d")
momentum_step = _solution("12_training_dynamics", "sgd_momentum_step")
adam_step = _solution("12_training_dynamics", "adam_step")


# ---- 01: from NHWC uint8 to normalised NCHW float32 ------------------------------------------

def test_to_network_input_accepts_the_solution_the_library_and_normalising_before_moving():
    def normalise_then_transpose(images, mean, std):
        x = (images.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    for right in (to_network_input, ec.library_to_network_input, normalise_then_transpose):
        ec.check_to_network_input(right)


def test_to_network_input_rejects_a_reshape_instead_of_a_transpose():
    def reshaped(images, mean, std):
        n, h, w, c = images.shape
        x = images.reshape(n, c, h, w).astype(np.float32) / 255     # same shape, pixels moved
        return (x - np.float32(mean)[None, :, None, None]) / np.float32(std)[None, :, None, None]
    _rejects(ec.check_to_network_input, reshaped, "colour", "x: relative error")


def test_to_network_input_rejects_a_missing_division_by_255():
    def no_scaling(images, mean, std):
        return to_network_input(images, mean, std) * 255 + \
            254 * np.float32(mean)[None, :, None, None] / np.float32(std)[None, :, None, None]
    _rejects(ec.check_to_network_input, no_scaling, "x: relative error")


def test_to_network_input_rejects_a_float64_batch():
    def float64_statistics(images, mean, std):
        x = images.transpose(0, 3, 1, 2) / 255.0                       # float64 already
        return (x - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    _rejects(ec.check_to_network_input, float64_statistics, "dtype float64, expected float32")


def test_to_network_input_rejects_a_transposed_view_left_in_nhwc_order():
    def transposed_view(images, mean, std):
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)   # order "K"
        return (x - np.float32(mean)[None, :, None, None]) / np.float32(std)[None, :, None, None]
    _rejects(ec.check_to_network_input, transposed_view, "colour", "not C-contiguous",
             "order='C'")


# ---- 03: im2col ------------------------------------------------------------------------------

def test_im2col_accepts_the_solution_the_library_and_a_loop_over_windows():
    def window_by_window(x, kernel_size, stride, padding):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (top, bottom, left, right) = kernel_size, stride, padding
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
        cols = np.empty((c * kh * kw, n * out_h * out_w), dtype=x.dtype)
        for image in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    window = padded[image, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    cols[:, (image * out_h + i) * out_w + j] = window.ravel()
        return cols, (out_h, out_w)

    for right in (im2col_windows, ec.library_im2col, window_by_window):
        ec.check_im2col(right)


def test_im2col_rejects_swapped_kernel_height_and_width():
    def swapped(x, kernel_size, stride, padding):
        return im2col_windows(x, kernel_size[::-1], stride, padding)
    _rejects(ec.check_im2col, swapped, "2x3 kernel", "(out_h, out_w) = (4, 4), expected (5, 4)")


def test_im2col_rejects_images_as_the_fastest_column_index():
    def image_fastest(x, kernel_size, stride, padding):
        cols, (out_h, out_w) = im2col_windows(x, kernel_size, stride, padding)
        n = x.shape[0]
        # columns ordered (i, j, n) instead of (n, i, j)
        reordered = cols.reshape(-1, n, out_h, out_w).transpose(0, 2, 3, 1)
        return reordered.reshape(cols.shape), (out_h, out_w)
    _rejects(ec.check_im2col, image_fastest, "2 images", "cols (rows: (c, a, b); columns: "
             "(n, i, j)): relative error")


def test_im2col_rejects_channels_after_the_taps_in_the_rows():
    def taps_first(x, kernel_size, stride, padding):
        cols, size = im2col_windows(x, kernel_size, stride, padding)
        c, (kh, kw) = x.shape[1], kernel_size
        return cols.reshape(c, kh * kw, -1).transpose(1, 0, 2).reshape(cols.shape), size
    _rejects(ec.check_im2col, taps_first, "3 channels", "relative error")


def test_im2col_rejects_an_ignored_padding():
    def unpadded(x, kernel_size, stride, padding):
        return im2col_windows(x, kernel_size, stride, (0, 0, 0, 0))
    _rejects(ec.check_im2col, unpadded, "padding (0, 1, 2, 0)", "= (4, 3), expected (5, 4)")


def test_im2col_rejects_float64_columns_for_a_float32_input():
    def float64_cols(x, kernel_size, stride, padding):
        cols, size = im2col_windows(x, kernel_size, stride, padding)
        return cols.astype(np.float64), size
    _rejects(ec.check_im2col, float64_cols, "dtype float64, expected float32")


# ---- 09: a parallel Numba kernel -------------------------------------------------------------

def test_bias_relu_accepts_the_solution_the_library_and_a_row_per_task_kernel():
    @njit(parallel=True)
    def row_per_task(x, bias):
        n_images, channels, height, width = x.shape
        y = np.empty_like(x)
        for row in prange(n_images * channels * height):
            n = row // (channels * height)
            c = row // height % channels
            h = row % height
            for w in range(width):
                y[n, c, h, w] = max(x[n, c, h, w] + bias[c], np.float32(0))
        return y

    for right in (njit(parallel=True)(bias_relu_source), ec.library_bias_relu, row_per_task):
        ec.check_bias_relu(right)


def _plane_kernel(value_of):
    """A bias+ReLU-shaped loop whose output value is ``value_of(x, bias, n, c, h, w)``,
    left uncompiled (the check runs its Python source first, which rejects it)."""
    def kernel(x, bias):
        y = np.empty_like(x)
        for n, c, h, w in np.ndindex(*x.shape):
            y[n, c, h, w] = value_of(x, bias, n, c, h, w)
        return y
    return _as_parallel_dispatcher(kernel)


def _as_parallel_dispatcher(kernel):
    """Wrap ``kernel`` so it looks compiled with parallel=True (``py_func``, ``targetoptions``)
    without compiling it: wrong values must be rejected by the Python pass alone."""
    class Dispatcher:
        py_func = staticmethod(kernel)
        targetoptions = {"parallel": True}

        def __call__(self, x, bias):
            return kernel(x, bias)
    return Dispatcher()


def test_bias_relu_rejects_the_bias_of_the_image_instead_of_the_channel():
    wrong = _plane_kernel(lambda x, b, n, c, h, w: max(x[n, c, h, w] + b[n], 0))
    _rejects(ec.check_bias_relu, wrong, "as Python", "2 images, 3 channels", "relative error")


def test_bias_relu_rejects_the_relu_before_the_bias():
    wrong = _plane_kernel(lambda x, b, n, c, h, w: max(x[n, c, h, w], 0) + b[c])
    _rejects(ec.check_bias_relu, wrong, "y: relative error")


def test_bias_relu_rejects_a_float64_output_and_writing_into_x():
    def float64_out(x, bias):
        return np.maximum(x.astype(np.float64) + bias[None, :, None, None], 0)

    def in_place(x, bias):
        x += bias[None, :, None, None]
        np.maximum(x, 0, out=x)
        return x
    _rejects(ec.check_bias_relu, _as_parallel_dispatcher(float64_out),
             "dtype float64, expected float32")
    _rejects(ec.check_bias_relu, _as_parallel_dispatcher(in_place), "changed its input x")


def test_bias_relu_rejects_a_kernel_that_is_not_parallel_or_not_compiled():
    _rejects(ec.check_bias_relu, bias_relu_source, "plain Python", "@njit(parallel=True)")
    _rejects(ec.check_bias_relu, njit(bias_relu_source), "without parallel=True")


# ---- 10: batched saliency --------------------------------------------------------------------

def test_saliency_accepts_the_solution_the_library_and_one_backward_per_image():
    def image_by_image(net, images, classes):
        maps = []
        for image, label in zip(images, classes):
            logits = net(image[None])
            dy = np.zeros_like(logits)
            dy[0, label] = 1
            maps.append(np.abs(net.backward(dy))[0].max(axis=0))
            net.zero_grad()
        return np.array(maps)

    for right in (saliency_maps, ec.library_saliency_maps, image_by_image):
        ec.check_saliency_maps(right)


def test_saliency_rejects_the_gradient_of_all_the_logits():
    def every_logit(net, images, classes):
        dx = net.backward(np.ones_like(net(images)))
        net.zero_grad()
        return np.abs(dx).max(axis=1)
    _rejects(ec.check_saliency_maps, every_logit, "saliency", "relative error")


def test_saliency_rejects_one_class_for_the_whole_batch():
    def first_class_only(net, images, classes):
        return saliency_maps(net, images, np.full_like(classes, classes[0]))
    _rejects(ec.check_saliency_maps, first_class_only, "classes [2, 0, 4]", "relative error")


def test_saliency_rejects_signed_gradients_and_the_channel_mean():
    def signed(net, images, classes):
        logits = net(images)
        dy = np.zeros_like(logits)
        dy[np.arange(len(images)), classes] = 1
        dx = net.backward(dy)
        net.zero_grad()
        return dx.max(axis=1)

    def channel_mean(net, images, classes):
        logits = net(images)
        dy = np.zeros_like(logits)
        dy[np.arange(len(images)), classes] = 1
        dx = net.backward(dy)
        net.zero_grad()
        return np.abs(dx).mean(axis=1)
    _rejects(ec.check_saliency_maps, signed, "relative error")
    _rejects(ec.check_saliency_maps, channel_mean, "largest |gradient| over the channels")


def test_saliency_rejects_leaving_gradients_in_the_parameters():
    def no_zero_grad(net, images, classes):
        logits = net(images)
        dy = np.zeros_like(logits)
        dy[np.arange(len(images)), classes] = 1
        return np.abs(net.backward(dy)).max(axis=1)
    _rejects(ec.check_saliency_maps, no_zero_grad, "left gradients in the parameters",
             "net.zero_grad()")


# ---- 11: depthwise convolution ---------------------------------------------------------------

def test_depthwise_accepts_the_solution_the_library_and_a_channel_by_channel_loop():
    def channel_by_channel(x, weight, stride=1, padding=0):
        from minicnn.kernels import reference

        return np.concatenate([
            reference.conv2d_forward(x[:, c:c + 1], weight[c:c + 1], None, (stride, stride),
                                     (padding,) * 4, (1, 1), 1)[0]
            for c in range(x.shape[1])], axis=1)

    for right in (depthwise_conv2d, ec.library_depthwise_conv2d, channel_by_channel):
        ec.check_depthwise_conv2d(right)


def test_depthwise_rejects_summing_over_the_channels():
    def summed(x, weight, stride=1, padding=0):
        y = depthwise_conv2d(x, weight, stride, padding)
        return np.broadcast_to(y.sum(axis=1, keepdims=True), y.shape)
    _rejects(ec.check_depthwise_conv2d, summed, "y: relative error")


def test_depthwise_rejects_the_kernels_of_other_channels():
    def reversed_channels(x, weight, stride=1, padding=0):
        return depthwise_conv2d(x, weight[::-1], stride, padding)
    _rejects(ec.check_depthwise_conv2d, reversed_channels, "relative error")


def test_depthwise_rejects_an_ignored_stride():
    def stride_one(x, weight, stride=1, padding=0):
        return depthwise_conv2d(x, weight, 1, padding)
    _rejects(ec.check_depthwise_conv2d, stride_one, "stride 2", "shape (1, 4, 6, 6), "
             "expected (1, 4, 3, 3)")


# ---- 12: momentum and Adam -------------------------------------------------------------------

def test_momentum_accepts_the_solution_the_library_and_whole_array_assignment():
    def assigned(param, grad, velocity, lr, momentum):
        velocity[...] = momentum * velocity + grad
        param[...] = param - lr * velocity

    for right in (momentum_step, ec.library_sgd_momentum_step, assigned):
        ec.check_sgd_momentum_step(right)


def test_momentum_rejects_a_dampened_average():
    def average(param, grad, velocity, lr, momentum):
        velocity *= momentum
        velocity += (1 - momentum) * grad
        param -= lr * velocity
    _rejects(ec.check_sgd_momentum_step, average, "step 1", "velocity: relative error")


def test_momentum_rejects_the_learning_rate_inside_the_velocity():
    """v = m v + lr g; p -= v is the same as PyTorch's rule only while lr stays constant."""
    def lr_inside(param, grad, velocity, lr, momentum):
        velocity *= momentum
        velocity += lr * grad
        param -= velocity
    _rejects(ec.check_sgd_momentum_step, lr_inside, "velocity: relative error")


def test_momentum_rejects_a_velocity_that_is_not_kept():
    def rebound(param, grad, velocity, lr, momentum):
        velocity = momentum * velocity + grad          # a new local array: the caller's stays 0
        param -= lr * velocity
    _rejects(ec.check_sgd_momentum_step, rebound, "velocity did not change", "in place")


def test_adam_accepts_the_solution_the_library_and_the_folded_bias_correction():
    def folded(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps):
        exp_avg[...] = beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
        denominator = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2 ** step) + eps
        param -= lr / (1 - beta1 ** step) * exp_avg / denominator

    for right in (adam_step, ec.library_adam_step, folded):
        ec.check_adam_step(right)


def _adam_variant(corrected=True, eps_inside=False, dampen=True, step_offset=0):
    def variant(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps):
        step += step_offset
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad if dampen else grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        m, v = exp_avg, exp_avg_sq
        if corrected:
            m, v = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        denominator = np.sqrt(v + eps) if eps_inside else np.sqrt(v) + eps
        param -= lr * m / denominator
    return variant


def test_adam_rejects_a_missing_bias_correction():
    _rejects(ec.check_adam_step, _adam_variant(corrected=False), "step 1", "param: relative error")


def test_adam_rejects_eps_inside_the_square_root():
    # Caught already with gradients of order 1 (relative error ~1e-9, far above float64
    # rounding); with gradients of order 1e-6 the step would be 100 times too small.
    _rejects(ec.check_adam_step, _adam_variant(eps_inside=True), "param: relative error")


def test_adam_rejects_an_undampened_first_moment_and_a_step_count_from_zero():
    _rejects(ec.check_adam_step, _adam_variant(dampen=False), "exp_avg (the running mean of "
             "the gradients): relative error")
    with np.errstate(divide="ignore", invalid="ignore"):
        _rejects(ec.check_adam_step, _adam_variant(step_offset=-1), "step 1", "non-finite")


def test_adam_rejects_moments_that_are_not_kept():
    def rebound(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps):
        exp_avg = beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
        param -= lr * (exp_avg / (1 - beta1 ** step)) / (
            np.sqrt(exp_avg_sq / (1 - beta2 ** step)) + eps)
    _rejects(ec.check_adam_step, rebound, "exp_avg did not change", "in place")
