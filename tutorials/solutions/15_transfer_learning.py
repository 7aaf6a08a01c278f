"""Worked solutions to tutorial 15's exercises (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import copy

from minicnn import nn
from exercise_checks_small_machines import TransferNetwork


def transfer_network(pretrained, keep, num_classes, rng):
    """Copies of pretrained's first `keep` layers, then a freshly initialised head."""
    layers = list(pretrained.children())
    # deepcopy: the new network must own its weights, or training it rewrites the pretrained.
    features = nn.Sequential(*copy.deepcopy(layers[:keep]))
    rest = layers[keep:]
    last_linear = max(i for i, layer in enumerate(rest) if isinstance(layer, nn.Linear))
    head = []
    for index, layer in enumerate(rest):
        if isinstance(layer, nn.Linear):
            # A fresh Linear: the old weights map old features to old classes.
            width = num_classes if index == last_linear else layer.out_features
            head.append(nn.Linear(layer.in_features, width, rng=rng, dtype=layer.weight.dtype))
        else:
            # ReLU, Flatten: no weights, but a copy, since a layer remembers its last input.
            head.append(copy.deepcopy(layer))
    return TransferNetwork(features, nn.Sequential(*head))


def frozen_features_step(network, x, y, loss_fn, lr):
    """One SGD step on network.head only (network.features frozen); returns the loss."""
    features = network.features(x)          # forward only: nothing here will be updated
    loss = loss_fn(network.head(features), y)
    network.head.zero_grad()
    network.head.backward(loss_fn.backward())   # stop at the features: they are frozen
    for p in network.head.parameters():
        p.data -= lr * p.grad
    return float(loss)
