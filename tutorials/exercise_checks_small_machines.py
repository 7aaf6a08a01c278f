"""The checks and library versions behind tutorials 15 and 16 (lessons for small machines).

Tutorial plumbing, not part of minicnn, in the style of ``exercise_checks.py``: each
``check_*`` takes the learner's function, runs it on small cases chosen to catch the usual
mistakes and raises ``AssertionError`` saying which case and what is wrong; each ``library_*``
function is what a tutorial carries on with until the learner's version passes (see
``tutorial_tools.check_exercise``).

minicnn has no ``requires_grad`` flag: here a layer is *frozen* by leaving its parameters out
of the update (and, for speed, out of the backward pass), which is all freezing means.

The tests (``tests/test_tutorial_exercises_small_machines.py``) feed every check the worked
solution, which must pass, and deliberately wrong answers, which must be rejected.
"""

from __future__ import annotations

import copy

import numpy as np

from minicnn import nn
from minicnn.nn.module import Module
from tutorial_tools import compare


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# 15: transfer learning


class TransferNetwork(Module):
    """A pretrained feature extractor followed by a new head.

    Parameters
    ----------
    features : nn.Sequential
        Layers taken over from a network trained on another task; (N, C, H, W) -> (N, F...).
    head : nn.Sequential
        The new task's classifier; features' output -> logits (N, num_classes).

    The state dict names follow the two fields: ``features.0.weight``, ``head.2.bias``, ...
    """

    def __init__(self, features: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._output(self.head(self.features(x)))

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        dy = self._check_dy(dy)
        return self.features.backward(self.head.backward(dy), need_input_grad=need_input_grad)


def library_transfer_network(pretrained: nn.Sequential, keep: int, num_classes: int,
                             rng: np.random.Generator) -> TransferNetwork:
    """The first ``keep`` layers of ``pretrained`` (copied), then its remaining layers with
    every ``Linear`` replaced by a freshly initialised one, the last ``num_classes`` wide."""
    layers = list(pretrained.children())
    features = nn.Sequential(*copy.deepcopy(layers[:keep]))
    rest = layers[keep:]
    last_linear = max(i for i, layer in enumerate(rest) if isinstance(layer, nn.Linear))
    head = []
    for index, layer in enumerate(rest):
        if isinstance(layer, nn.Linear):
            out = num_classes if index == last_linear else layer.out_features
            head.append(nn.Linear(layer.in_features, out, rng=rng, dtype=layer.weight.dtype))
        else:
            head.append(copy.deepcopy(layer))
    return TransferNetwork(features, nn.Sequential(*head))


def _small_pretrained(seed: int) -> nn.Sequential:
    """A LeNet-shaped float64 network on 12x12 images, small enough to check in milliseconds."""
    rng = _rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, rng=rng, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(75, 16, rng=rng, dtype=np.float64), nn.ReLU(),
        nn.Linear(16, 10, rng=rng, dtype=np.float64))


def _linears(module: Module) -> list:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def check_transfer_network(fn) -> None:
    """``fn(pretrained, keep, num_classes, rng) -> TransferNetwork`` keeps copies of the
    first ``keep`` layers and builds a fresh head of the right width."""
    for keep, num_classes in ((4, 10), (6, 3)):
        case = f"keep={keep}, num_classes={num_classes}"
        pretrained = _small_pretrained(15)
        before = {name: p.data.copy() for name, p in pretrained.named_parameters()}
        network = fn(pretrained, keep, num_classes, _rng(keep))
        if not isinstance(network, TransferNetwork):
            raise AssertionError(f"transfer_network ({case}): return TransferNetwork(features, "
                                 f"head), got {type(network).__name__}")
        kept = list(pretrained.children())[:keep]
        if len(list(network.features.children())) != keep:
            raise AssertionError(
                f"transfer_network ({case}): features has "
                f"{len(list(network.features.children()))} layers, expected the first {keep} "
                f"of the pretrained network")
        for (name, mine), theirs in zip(network.features.named_parameters(),
                                        [p for layer in kept for p in layer.parameters()]):
            compare(f"transfer_network ({case}): features.{name} (the pretrained weights)",
                    mine.data, theirs.data, rtol=0)
            if np.shares_memory(mine.data, theirs.data):
                raise AssertionError(
                    f"transfer_network ({case}): features.{name} is the pretrained network's "
                    f"own array, so training the new network would change the pretrained one "
                    f"(and the next experiment would start from the wrong weights): copy the "
                    f"layers (copy.deepcopy)")
        x = _rng(1).standard_normal((5, 1, 12, 12))
        logits = network(x)
        if logits.shape != (5, num_classes):
            raise AssertionError(f"transfer_network ({case}): logits of shape {logits.shape} "
                                 f"for 5 images, expected (5, {num_classes})")
        old_head = _linears(nn.Sequential(*list(pretrained.children())[keep:]))
        new_head = _linears(network.head)
        if len(new_head) != len(old_head):
            raise AssertionError(f"transfer_network ({case}): the head has {len(new_head)} "
                                 f"Linear layers, the pretrained network {len(old_head)} after "
                                 f"layer {keep}: rebuild each of them")
        for index, (new, old) in enumerate(zip(new_head, old_head)):
            what = f"transfer_network ({case}): head Linear {index}"
            if new.weight.shape == old.weight.shape and np.allclose(new.weight.data,
                                                                     old.weight.data):
                raise AssertionError(f"{what} still holds the pretrained weights: a new task "
                                     f"needs a new, freshly initialised head")
            bound = 1 / np.sqrt(new.in_features)
            spread = float(new.weight.data.std()) * np.sqrt(3)   # uniform(-b, b): std b/sqrt 3
            if not 0.5 * bound < spread < 2 * bound:
                raise AssertionError(
                    f"{what}: weights spread over +-{spread:.3g}, but a fresh Linear of "
                    f"{new.in_features} inputs draws them from +-{bound:.3g} (build it with "
                    f"nn.Linear(in_features, out_features, rng=rng))")
        for name, p in pretrained.named_parameters():
            if not np.array_equal(p.data, before[name]):
                raise AssertionError(f"transfer_network ({case}): it changed the pretrained "
                                     f"network's {name}")


def library_frozen_features_step(network: TransferNetwork, x, y, loss_fn, lr: float) -> float:
    """One SGD step on ``network.head`` only; ``network.features`` is frozen."""
    logits = network.head(network.features(x))
    loss = loss_fn(logits, y)
    network.head.zero_grad()
    network.head.backward(loss_fn.backward())
    for p in network.head.parameters():
        p.data -= lr * p.grad
    return float(loss)


def check_frozen_features_step(fn) -> None:
    """``fn(network, x, y, loss_fn, lr) -> loss``: two steps leave every feature weight as it
    was and move the head exactly as two plain SGD steps on the head alone would."""
    pretrained = _small_pretrained(16)
    mine = library_transfer_network(pretrained, 4, 3, _rng(0))
    theirs = copy.deepcopy(mine)
    rng = _rng(2)
    for step in range(2):
        x, y = rng.standard_normal((6, 1, 12, 12)), rng.integers(0, 3, 6)
        expected = library_frozen_features_step(theirs, x, y, nn.CrossEntropyLoss(), 0.1)
        loss = fn(mine, x.copy(), y.copy(), nn.CrossEntropyLoss(), 0.1)
        what = f"frozen_features_step, step {step + 1} of 2"
        if loss is None:
            raise AssertionError(f"{what}: returned None, expected the loss (a float)")
        compare(f"{what}: the loss", np.asarray(float(loss)), np.asarray(expected), rtol=1e-9)
        for name, p in mine.features.named_parameters():
            if not np.array_equal(p.data, dict(pretrained.named_parameters())[name].data):
                raise AssertionError(f"{what}: the frozen features.{name} changed; only the "
                                     f"head's parameters may be updated")
        for (name, a), b in zip(mine.head.named_parameters(), theirs.head.parameters()):
            compare(f"{what}: head.{name} (after zero_grad, backward, p -= lr * grad)",
                    a.data, b.data, rtol=1e-9)


# --------------------------------------------------------------------------------------------
# 16: magnitude pruning


def library_magnitude_masks(weights, sparsity: float) -> list:
    """Global magnitude pruning: one boolean mask per array in ``weights`` (True: kept).

    Exactly ``round(sparsity * total)`` weights are pruned, those of smallest ``|w|`` over all
    arrays together; ties at the threshold are broken by position (a stable sort).
    """
    magnitudes = np.concatenate([np.abs(w).ravel() for w in weights])
    pruned = int(round(sparsity * magnitudes.size))
    keep = np.ones(magnitudes.size, dtype=bool)
    keep[np.argsort(magnitudes, kind="stable")[:pruned]] = False
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start:start + w.size].reshape(w.shape))
        start += w.size
    return masks


def _pruning_cases():
    rng = _rng(16)
    # Magnitudes drawn from a few values only, signs at random: many ties, also across layers.
    tied = [rng.choice([0.5, 1.0, 2.0, 3.0], size) * rng.choice([-1.0, 1.0], size)
            for size in ((4, 5), (10,))]
    return [
        ("two layers of different scale, sparsity 0.5",
         [rng.standard_normal((6, 4)) * 0.1, rng.standard_normal((3, 2, 2)) * 2.0], 0.5),
        ("one layer, sparsity 0.9", [rng.standard_normal((8, 5))], 0.9),
        ("30 weights of 4 magnitudes (ties), sparsity 0.6", tied, 0.6),
        ("sparsity 0: nothing pruned", [rng.standard_normal(7)], 0.0),
    ]


def check_magnitude_masks(fn) -> None:
    """``fn(weights, sparsity) -> masks``: one boolean mask per array, exactly the right number
    kept, and no pruned weight larger in magnitude than a kept one (over all layers)."""
    for name, weights, sparsity in _pruning_cases():
        masks = fn([w.copy() for w in weights], sparsity)
        what = f"magnitude_masks, case '{name}'"
        if not isinstance(masks, (list, tuple)) or len(masks) != len(weights):
            raise AssertionError(f"{what}: return a list of {len(weights)} masks, one per "
                                 f"array, got {type(masks).__name__}")
        for index, (mask, w) in enumerate(zip(masks, weights)):
            mask = np.asarray(mask)
            if mask.shape != w.shape or mask.dtype != bool:
                raise AssertionError(f"{what}: mask {index} has shape {mask.shape} and dtype "
                                     f"{mask.dtype}, expected a boolean array of shape "
                                     f"{w.shape} (True: keep)")
        total = sum(w.size for w in weights)
        expected_kept = total - int(round(sparsity * total))
        kept = sum(int(np.count_nonzero(mask)) for mask in masks)
        if kept != expected_kept:
            hint = (" -- several weights tie at the threshold: comparing with > or >= alone "
                    "keeps too few or too many; sort and cut at the count") if "ties" in name \
                else ""
            raise AssertionError(
                f"{what}: keeps {kept} of {total} weights, expected exactly {expected_kept} "
                f"(sparsity {sparsity}){hint}")
        kept_magnitudes = np.concatenate([np.abs(w)[np.asarray(m)] for w, m in
                                          zip(weights, masks)])
        pruned_magnitudes = np.concatenate([np.abs(w)[~np.asarray(m)] for w, m in
                                            zip(weights, masks)])
        if kept_magnitudes.size and pruned_magnitudes.size and \
                pruned_magnitudes.max() > kept_magnitudes.min():
            raise AssertionError(
                f"{what}: a pruned weight of magnitude {pruned_magnitudes.max():.4g} is larger "
                f"than a kept one ({kept_magnitudes.min():.4g}); prune the smallest |w| over "
                f"all the arrays together (global), not per array and not by signed value")


# --------------------------------------------------------------------------------------------
# 16: the distillation loss


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (N, C) logits, stable: exp never overflows, log never sees 0."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def library_distillation_loss(student_logits, teacher_logits, temperature: float):
    """``(loss, dstudent_logits)``: Hinton et al.'s soft-target loss.

    ``loss = T^2 * mean over the batch of KL(softmax(teacher / T) || softmax(student / T))``;
    the gradient with respect to the student's logits is ``T * (p_student - p_teacher) / N``.
    The ``T^2`` keeps the gradient's size independent of ``T`` (the softened gradients shrink
    as ``1/T^2``), so it can be mixed with the hard-label loss at a fixed weight.
    """
    t = float(temperature)
    log_p_student = _log_softmax(student_logits / t)
    log_p_teacher = _log_softmax(teacher_logits / t)
    p_teacher = np.exp(log_p_teacher)
    n = student_logits.shape[0]
    loss = t * t * float(np.sum(p_teacher * (log_p_teacher - log_p_student))) / n
    grad = t * (np.exp(log_p_student) - p_teacher) / n
    return loss, grad.astype(student_logits.dtype, copy=False)


def _finite_difference(fn, student, teacher, temperature, eps=1e-6) -> np.ndarray:
    """Central differences of ``fn``'s loss with respect to each student logit (float64)."""
    grad = np.zeros_like(student)
    for index in np.ndindex(*student.shape):
        up, down = student.copy(), student.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (float(fn(up, teacher.copy(), temperature)[0])
                       - float(fn(down, teacher.copy(), temperature)[0])) / (2 * eps)
    return grad


def check_distillation_loss(fn) -> None:
    """``fn(student_logits, teacher_logits, T) -> (loss, dstudent_logits)`` against the
    definition (loss and gradient, several temperatures, huge logits) and the learner's own
    gradient against a float64 finite difference of the learner's own loss."""
    rng = _rng(17)
    cases = [
        ("4 examples, 5 classes, T=1", rng.standard_normal((4, 5)) * 2,
         rng.standard_normal((4, 5)) * 3, 1.0),
        ("4 examples, 5 classes, T=4", rng.standard_normal((4, 5)) * 2,
         rng.standard_normal((4, 5)) * 3, 4.0),
        ("3 examples, 10 classes, T=2.5", rng.standard_normal((3, 10)),
         rng.standard_normal((3, 10)) * 5, 2.5),
        ("logits in the thousands (overflow test), T=2", rng.standard_normal((2, 4)) * 900,
         rng.standard_normal((2, 4)) * 900 + 1000, 2.0),
    ]
    gradients = []
    for name, student, teacher, temperature in cases:
        what = f"distillation_loss, case '{name}'"
        with np.errstate(all="ignore"):
            result = fn(student.copy(), teacher.copy(), temperature)
        if not isinstance(result, tuple) or len(result) != 2:
            raise AssertionError(f"{what}: return a tuple (loss, dstudent_logits)")
        loss, grad = result
        expected_loss, expected_grad = library_distillation_loss(student, teacher, temperature)
        got_loss = float(np.asarray(loss))
        hint = ""
        if expected_loss and np.isclose(got_loss * temperature ** 2, expected_loss, rtol=1e-6):
            hint = " (it is 1/T^2 of it: the loss needs the T^2 factor)"
        elif np.isfinite(got_loss) and got_loss < 0:
            hint = " (a KL divergence is never negative: KL(teacher || student))"
        if not np.isfinite(got_loss) or abs(got_loss - expected_loss) > 1e-9 * max(
                1.0, abs(expected_loss)):
            raise AssertionError(f"{what}: loss {got_loss!r}, expected {expected_loss!r}"
                                 + hint)
        gradients.append((what, grad, expected_grad))
    # Calculus first (your gradient against your own loss), then the definition.
    name, student, teacher, temperature = cases[2]
    numeric = _finite_difference(fn, student, teacher, temperature)
    compare(f"distillation_loss, case '{name}': dstudent_logits against a float64 central "
            f"difference of your loss", fn(student.copy(), teacher.copy(), temperature)[1],
            numeric, rtol=1e-6)
    for what, grad, expected_grad in gradients:
        compare(f"{what}: dstudent_logits", grad, expected_grad, rtol=1e-8)
