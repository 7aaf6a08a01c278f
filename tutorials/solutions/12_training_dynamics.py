"""Worked solutions to tutorial 12's exercises (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def sgd_step_with_weight_decay(parameters, lr, weight_decay):
    """One plain SGD step with L2 weight decay, in place."""
    for p in parameters:
        # The decay term is the gradient of (weight_decay / 2) * ||p||^2, added to the loss's.
        p.data -= lr * (p.grad + weight_decay * p.data)


def sgd_momentum_step(param, grad, velocity, lr, momentum):
    """One step of SGD with momentum, PyTorch's rule, in place on param and velocity.

    param, grad, velocity: arrays of one shape (velocity is zeros before the first step).
    """
    # The velocity sums gradients, not steps: lr is applied when stepping, so a learning-rate
    # schedule changes the step size at once instead of after the velocity has forgotten.
    velocity *= momentum
    velocity += grad
    param -= lr * velocity


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps):
    """Adam's step number ``step`` (1 for the first), in place on the three arrays."""
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    # Both averages start at zero and are biased towards it for the first ~1/(1 - beta)
    # steps; dividing by 1 - beta**step removes that bias.
    corrected_avg = exp_avg / (1 - beta1 ** step)
    corrected_avg_sq = exp_avg_sq / (1 - beta2 ** step)
    # eps outside the square root, as in PyTorch (and in the paper).
    param -= lr * corrected_avg / (np.sqrt(corrected_avg_sq) + eps)
