"""Worked solution to tutorial 12's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""


def sgd_step_with_weight_decay(parameters, lr, weight_decay):
    """One plain SGD step with L2 weight decay, in place."""
    for p in parameters:
        # The decay term is the gradient of (weight_decay / 2) * ||p||^2, added to the loss's.
        p.data -= lr * (p.grad + weight_decay * p.data)
