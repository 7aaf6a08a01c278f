"""Worked solutions to tutorial 16's exercises (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import numpy as np


def magnitude_masks(weights, sparsity):
    """Global magnitude pruning masks (True: kept)."""
    magnitudes = np.concatenate([np.abs(w).ravel() for w in weights])
    pruned = int(round(sparsity * magnitudes.size))
    # Sort rather than compare with a threshold: ties at the threshold would make '>' keep
    # too few and '>=' too many. A stable sort breaks ties by position.
    keep = np.ones(magnitudes.size, dtype=bool)
    keep[np.argsort(magnitudes, kind="stable")[:pruned]] = False
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start:start + w.size].reshape(w.shape))
        start += w.size
    return masks


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)          # stable: exp never overflows
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def distillation_loss(student_logits, teacher_logits, temperature):
    """T^2 * mean KL(softmax(teacher / T) || softmax(student / T)) and its gradient."""
    t = float(temperature)
    log_p_student = _log_softmax(student_logits / t)
    log_p_teacher = _log_softmax(teacher_logits / t)
    p_teacher = np.exp(log_p_teacher)
    n = student_logits.shape[0]
    loss = t * t * float(np.sum(p_teacher * (log_p_teacher - log_p_student))) / n
    # d/dz of KL through z/T gives (p_s - p_t) / T; times T^2 / N.
    grad = t * (np.exp(log_p_student) - p_teacher) / n
    return loss, grad
