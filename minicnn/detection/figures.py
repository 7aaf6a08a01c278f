"""Figures for detection runs: boxes on pictures, precision-recall curves, training curves."""

from __future__ import annotations

import numpy as np

from ..viz import _finish, _pyplot


def draw_boxes(ax, image: np.ndarray, boxes, labels, scores=None, truth=None, color="lime"):
    """Show ``image`` (H, W) on ``ax`` with each box outlined and labelled ("7 0.98").

    ``truth``: optional ground-truth boxes (g, 4), drawn dashed in white underneath.
    """
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for box in ([] if truth is None else truth):
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor="white", linestyle="--", linewidth=1))
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor=color, linewidth=1.5))
        text = str(labels[k]) + (f" {scores[k]:.2f}" if scores is not None else "")
        ax.text(x0, y0 - 1, text, color="black", fontsize=7, va="bottom",
                bbox=dict(facecolor=color, edgecolor="none", pad=1, alpha=0.85))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_detections(images, detections, classes, path=None, ground_truth=None,
                    threshold: float = 0.5, columns: int = 4, title: str = ""):
    """A grid of scenes with their detections (score >= ``threshold``) and, dashed, the
    ground truth.

    images : (N, H, W) or (N, 1, H, W) in [0, 1]; detections : list of dicts as from
    :func:`minicnn.detection.decode`; ground_truth : list of dicts with ``boxes``, optional.
    """
    plt = _pyplot()
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        d = detections[k]
        keep = np.asarray(d["scores"]) >= threshold
        draw_boxes(ax, images[k], np.asarray(d["boxes"])[keep],
                   [classes[c] for c in np.asarray(d["classes"])[keep]],
                   np.asarray(d["scores"])[keep],
                   truth=None if ground_truth is None else ground_truth[k]["boxes"])
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_precision_recall(curves, classes, path=None, title="Precision-recall at IoU 0.5"):
    """One precision-recall curve per class (the all-point envelope, as AP integrates it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, curve in zip(classes, curves):
        if not curve.ground_truths:
            continue
        label = f"{name}: AP {curve.average_precision:.3f}"
        if not len(curve.recall):           # objects but no detections: AP 0, no curve
            ax.plot([], [], label=label)
            continue
        envelope = np.maximum.accumulate(curve.precision[::-1])[::-1]
        ax.step(np.concatenate([[0], curve.recall]), np.concatenate([envelope[:1], envelope]),
                where="pre", label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return _finish(fig, path)


def plot_detection_history(history: list[dict], path=None):
    """Training loss per epoch, and validation loss and mAP when a validation set was held
    out (``--val-size``)."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    validated = bool(history) and "val_map" in history[0]
    fig, axes = plt.subplots(1, 2 if validated else 1, figsize=(10 if validated else 5, 4),
                             squeeze=False)
    ax_loss = axes[0, 0]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if validated:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
        ax_map = axes[0, 1]
        ax_map.plot(epochs, [h["val_map"] for h in history], "s-", label="validation")
        ax_map.set(title="mAP@0.5", xlabel="epoch", ylabel="mAP", ylim=(0, 1))
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="objectness + box + class")
    from matplotlib.ticker import MaxNLocator

    for ax in axes.ravel():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, path)
