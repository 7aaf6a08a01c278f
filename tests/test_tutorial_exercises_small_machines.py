"""The exercises of tutorials 15 (transfer learning) and 16 (pruning and distillation): the
checks in ``tutorials/exercise_checks_small_machines.py``.

Every check must accept the worked solution, the library version and one other right
variant, and reject the mistakes learners really make with a message that names what is
wrong. Fast unit tests: they import the checks, they do not run the tutorials.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

# tutorial_helpers puts tutorials/ on sys.path, so the imports below find its modules.
from tutorial_helpers import rejects as _rejects, solution as _solution

import exercise_checks_small_machines as ec  # noqa: E402
from minicnn import nn, optim  # noqa: E402


transfer_network = _solution("15_transfer_learning", "transfer_network")
frozen_features_step = _solution("15_transfer_learning", "frozen_features_step")
magnitude_masks = _solution("16_pruning_distillation", "magnitude_masks")
distillation_loss = _solution("16_pruning_distillation", "distillation_loss")

EXERCISES = {
    "transfer_network": (ec.check_transfer_network, transfer_network,
                         ec.library_transfer_network),
    "frozen_features_step": (ec.check_frozen_features_step, frozen_features_step,
                             ec.library_frozen_features_step),
    "magnitude_masks": (ec.check_magnitude_masks, magnitude_masks, ec.library_magnitude_masks),
    "distillation_loss": (ec.check_distillation_loss, distillation_loss,
                          ec.library_distillation_loss),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_check_accepts_the_solution_and_the_library(name):
    check, solution, library = EXERCISES[name]
    check(solution)
    check(library)


# ---- 15: the transfer network ----------------------------------------------------------------

def test_transfer_network_check_accepts_another_right_variant():
    def whole_copy_then_split(pretrained, keep, num_classes, rng):
        layers = list(copy.deepcopy(pretrained).children())
        linears = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
        head = [nn.Linear(layer.in_features,
                          num_classes if index == linears[-1] else layer.out_features, rng=rng,
                          dtype=np.float64) if isinstance(layer, nn.Linear) else layer
                for index, layer in enumerate(layers) if index >= keep]
        return ec.TransferNetwork(nn.Sequential(*layers[:keep]), nn.Sequential(*head))
    ec.check_transfer_network(whole_copy_then_split)


def test_transfer_network_check_rejects_shared_feature_weights():
    def shared(pretrained, keep, num_classes, rng):
        network = transfer_network(pretrained, keep, num_classes, rng)
        return ec.TransferNetwork(nn.Sequential(*list(pretrained.children())[:keep]),
                                  network.head)
    _rejects(ec.check_transfer_network, shared, "features.0.weight",
             "pretrained network's own array", "copy")


def test_transfer_network_check_rejects_keeping_the_old_head():
    def old_head(pretrained, keep, num_classes, rng):
        layers = copy.deepcopy(list(pretrained.children()))
        return ec.TransferNetwork(nn.Sequential(*layers[:keep]), nn.Sequential(*layers[keep:]))
    _rejects(ec.check_transfer_network, old_head, "keep=4, num_classes=10",
             "still holds the pretrained weights")


def test_transfer_network_check_rejects_a_head_of_the_old_width():
    def ten_wide(pretrained, keep, num_classes, rng):
        return transfer_network(pretrained, keep, 10, rng)
    _rejects(ec.check_transfer_network, ten_wide, "num_classes=3", "logits of shape (5, 10)",
             "expected (5, 3)")


def test_transfer_network_check_rejects_a_zero_initialised_head():
    def zeros(pretrained, keep, num_classes, rng):
        network = transfer_network(pretrained, keep, num_classes, rng)
        for p in network.head.parameters():
            p.data[...] = 0
        return network
    _rejects(ec.check_transfer_network, zeros, "head Linear 0", "weights spread")


def test_transfer_network_check_rejects_a_plain_sequential():
    def plain(pretrained, keep, num_classes, rng):
        network = transfer_network(pretrained, keep, num_classes, rng)
        return nn.Sequential(*network.features.children(), *network.head.children())
    _rejects(ec.check_transfer_network, plain, "return TransferNetwork", "got Sequential")


# ---- 15: the frozen-features step ------------------------------------------------------------

def test_frozen_step_check_accepts_another_right_variant():
    def with_the_library_optimiser(network, x, y, loss_fn, lr):
        loss = loss_fn(network(x), y)
        network.head.zero_grad()
        network.head.backward(loss_fn.backward())
        optim.SGD(network.head.parameters(), lr=lr).step()
        return loss
    ec.check_frozen_features_step(with_the_library_optimiser)


def test_frozen_step_check_rejects_updating_the_frozen_features():
    def everything(network, x, y, loss_fn, lr):
        loss = loss_fn(network(x), y)
        network.zero_grad()
        network.backward(loss_fn.backward())
        for p in network.parameters():
            p.data -= lr * p.grad
        return loss
    _rejects(ec.check_frozen_features_step, everything, "step 1 of 2",
             "frozen features.0.weight changed")


def test_frozen_step_check_rejects_a_forgotten_zero_grad():
    def accumulates(network, x, y, loss_fn, lr):
        loss = loss_fn(network(x), y)
        network.head.backward(loss_fn.backward())
        for p in network.head.parameters():
            p.data -= lr * p.grad
        return loss
    _rejects(ec.check_frozen_features_step, accumulates, "step 2 of 2", "head.0.weight",
             "relative error")


def test_frozen_step_check_rejects_a_missing_loss_and_a_wrong_rate():
    def no_return(network, x, y, loss_fn, lr):
        frozen_features_step(network, x, y, loss_fn, lr)
    _rejects(ec.check_frozen_features_step, no_return, "returned None")

    def rate_ignored(network, x, y, loss_fn, lr):
        return frozen_features_step(network, x, y, loss_fn, 1.0)
    _rejects(ec.check_frozen_features_step, rate_ignored, "step 1 of 2", "relative error")


# ---- 16: magnitude-pruning masks -------------------------------------------------------------

def test_pruning_check_accepts_another_right_variant():
    def lexsort_by_magnitude_then_position(weights, sparsity):
        magnitudes = np.concatenate([np.abs(w).ravel() for w in weights])
        pruned = int(round(sparsity * magnitudes.size))
        order = np.lexsort((np.arange(magnitudes.size), magnitudes))   # ties by position
        keep = np.ones(magnitudes.size, bool)
        keep[order[:pruned]] = False
        return [part.reshape(w.shape) for part, w in
                zip(np.split(keep, np.cumsum([w.size for w in weights])[:-1]), weights)]
    ec.check_magnitude_masks(lexsort_by_magnitude_then_position)


def test_pruning_check_rejects_a_strict_threshold_with_ties():
    def strict(weights, sparsity):
        magnitudes = np.sort(np.concatenate([np.abs(w).ravel() for w in weights]))
        pruned = int(round(sparsity * magnitudes.size))
        threshold = magnitudes[pruned - 1] if pruned else -1.0
        return [np.abs(w) > threshold for w in weights]
    _rejects(ec.check_magnitude_masks, strict, "ties", "keeps", "expected exactly",
             "tie at the threshold")


def test_pruning_check_rejects_an_inclusive_threshold_with_ties():
    def inclusive(weights, sparsity):
        magnitudes = np.sort(np.concatenate([np.abs(w).ravel() for w in weights]))
        pruned = int(round(sparsity * magnitudes.size))
        threshold = magnitudes[pruned] if pruned < magnitudes.size else np.inf
        return [np.abs(w) >= threshold for w in weights]
    _rejects(ec.check_magnitude_masks, inclusive, "ties", "expected exactly")


def test_pruning_check_rejects_per_layer_pruning():
    def per_layer(weights, sparsity):
        return [magnitude_masks([w], sparsity)[0] for w in weights]
    _rejects(ec.check_magnitude_masks, per_layer, "two layers of different scale",
             "pruned weight of magnitude", "global")


def test_pruning_check_rejects_ranking_by_signed_value():
    def signed(weights, sparsity):
        values = np.concatenate([w.ravel() for w in weights])     # w where |w| was meant
        pruned = int(round(sparsity * values.size))
        keep = np.ones(values.size, bool)
        keep[np.argsort(values, kind="stable")[:pruned]] = False
        return [part.reshape(w.shape) for part, w in
                zip(np.split(keep, np.cumsum([w.size for w in weights])[:-1]), weights)]
    _rejects(ec.check_magnitude_masks, signed, "pruned weight of magnitude", "signed value")


def test_pruning_check_rejects_masks_that_are_not_boolean():
    def as_floats(weights, sparsity):
        return [mask.astype(np.float32) for mask in magnitude_masks(weights, sparsity)]
    _rejects(ec.check_magnitude_masks, as_floats, "dtype float32", "boolean")


# ---- 16: the distillation loss ---------------------------------------------------------------

def test_distillation_check_accepts_another_right_variant():
    def cross_entropy_minus_entropy(student_logits, teacher_logits, temperature):
        t = temperature
        p_t = np.exp(ec._log_softmax(teacher_logits / t))
        log_p_s = ec._log_softmax(student_logits / t)
        n = len(student_logits)
        cross_entropy = -np.sum(p_t * log_p_s) / n
        entropy = -np.sum(p_t * ec._log_softmax(teacher_logits / t)) / n
        return t ** 2 * (cross_entropy - entropy), t / n * (np.exp(log_p_s) - p_t)
    ec.check_distillation_loss(cross_entropy_minus_entropy)


def test_distillation_check_rejects_a_missing_t_squared():
    def no_t_squared(student_logits, teacher_logits, temperature):
        loss, grad = distillation_loss(student_logits, teacher_logits, temperature)
        return loss / temperature ** 2, grad / temperature ** 2
    _rejects(ec.check_distillation_loss, no_t_squared, "T=4", "loss", "T^2 factor")


def test_distillation_check_rejects_a_gradient_without_the_chain_rule_1_over_t():
    def no_chain_rule(student_logits, teacher_logits, temperature):
        loss, grad = distillation_loss(student_logits, teacher_logits, temperature)
        return loss, grad * temperature
    _rejects(ec.check_distillation_loss, no_chain_rule, "central difference", "relative error")


def test_distillation_check_rejects_the_reversed_kl():
    def reversed_kl(student_logits, teacher_logits, temperature):
        loss, _ = distillation_loss(teacher_logits, student_logits, temperature)
        _, grad = distillation_loss(student_logits, teacher_logits, temperature)
        return loss, grad
    _rejects(ec.check_distillation_loss, reversed_kl, "case '4 examples, 5 classes, T=1'",
             "loss")


def test_distillation_check_rejects_the_naive_softmax():
    def naive(student_logits, teacher_logits, temperature):
        t = temperature
        p_s = np.exp(student_logits / t) / np.exp(student_logits / t).sum(1, keepdims=True)
        p_t = np.exp(teacher_logits / t) / np.exp(teacher_logits / t).sum(1, keepdims=True)
        n = len(student_logits)
        return t * t * np.sum(p_t * np.log(p_t / p_s)) / n, t * (p_s - p_t) / n
    _rejects(ec.check_distillation_loss, naive, "overflow test", "loss nan")
