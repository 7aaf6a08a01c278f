"""Matplotlib figures for runs and tutorials: training curves, confusion matrix, image grids,
filters and feature maps. Each function returns the ``Figure`` and saves it when given a path.

matplotlib is imported lazily and the non-interactive ``Agg`` backend is used when no display
is available, so these work on servers and in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path, tight=True):
    if tight:
        fig.tight_layout()
    if path is not None:
        from .serialize import atomic_write

        # Atomic like every file minicnn writes: a killed run never leaves half a PNG.
        kind = Path(path).suffix.lstrip(".").lower() or "png"
        atomic_write(path, lambda handle: fig.savefig(handle, dpi=120, format=kind))
    return fig


def plot_history(history: list[dict], path=None):
    """Loss and accuracy per epoch (training and validation)."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if history and "val_loss" in history[0]:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    if history and "val_accuracy" in history[0]:
        ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], "s-", label="validation")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, path)


def plot_confusion(confusion: np.ndarray, classes: list[str], path=None, title="Confusion matrix"):
    """Counts of (true class, predicted class). The colour shows the *mistakes* only: on one
    scale with the diagonal (hundreds or thousands right per class against a handful wrong)
    every mistake would be the same pale colour. Correct counts are written on a neutral
    background."""
    plt = _pyplot()
    confusion = np.asarray(confusion)
    n = len(classes)
    mistakes = np.ma.masked_array(confusion.astype(np.float64), mask=np.eye(n, dtype=bool))
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.6 + 0.55 * n))
    cmap = plt.get_cmap("Reds").with_extremes(bad="#e6efe6")   # the diagonal: not coloured
    top = max(float(mistakes.max()) if mistakes.count() else 0.0, 1.0)
    image = ax.imshow(mistakes, cmap=cmap, vmin=0, vmax=top)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted class", ylabel="true class",
           title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i in range(n):
        for j in range(n):
            dark = i != j and confusion[i, j] > top / 2
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black", weight="bold" if i == j else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mistakes (off the diagonal)")
    return _finish(fig, path)


def _show_image(ax, image: np.ndarray):
    """Draw a (C, H, W) image, grayscale or RGB, any value range."""
    image = np.asarray(image, dtype=np.float64)
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray")
    else:
        lo, hi = image.min(), image.max()
        ax.imshow(((image - lo) / (hi - lo + 1e-12)).transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_image_grid(images: np.ndarray, titles: list[str], path=None, columns: int = 8,
                    suptitle: str | None = None):
    """A grid of (N, C, H, W) images with a title under each."""
    plt = _pyplot()
    count = max(len(images), 1)
    columns = min(columns, count)
    rows = -(-count // columns)
    # Room for the overall title: without it tight_layout squeezes short grids until the
    # second row's titles overlap the first row's images.
    height = 1.7 * rows + (0.5 if suptitle else 0.0)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.axis("on")
        _show_image(ax, image)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, path)


def plot_misclassified(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                       classes: list[str], path=None, limit: int = 32):
    """Test images the model got wrong, titled ``predicted (true)``."""
    wrong = np.flatnonzero(predictions != labels)[:limit]
    titles = [f"{classes[predictions[i]]} ({classes[labels[i]]})" for i in wrong]
    return plot_image_grid(images[wrong], titles, path,
                           suptitle=f"Misclassified: predicted (true), first {len(wrong)}")


def plot_filters(weight: np.ndarray, path=None, title="First-layer filters"):
    """Each output channel's kernel; for multi-channel kernels the channels are averaged
    (grayscale) unless there are exactly three (shown as RGB). Grayscale filters share one
    colour scale, symmetric around 0 (gray = 0), so a filter's strength is visible and two
    plots of the same layer (say before and after training) compare."""
    weight = np.asarray(weight, dtype=np.float64)
    titles = [f"filter {i}" for i in range(len(weight))]
    images = weight if weight.shape[1] in (1, 3) else weight.mean(axis=1, keepdims=True)
    if images.shape[1] == 3:
        return plot_image_grid(images, titles, path, suptitle=title)
    plt = _pyplot()
    count = max(len(images), 1)
    columns = min(8, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows + 0.5),
                             squeeze=False)
    limit = max(float(np.abs(images).max()) if images.size else 0.0, 1e-12)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, name in zip(axes.ravel(), images, titles):
        shown = ax.imshow(image[0], cmap="gray", vmin=-limit, vmax=limit)
        ax.set_title(name, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.9, 1))       # leave room on the right for the colour bar
    if len(images):
        fig.colorbar(shown, cax=fig.add_axes((0.92, 0.15, 0.012, 0.65)),
                     label="weight (one scale)")
    return _finish(fig, path, tight=False)


def plot_feature_maps(maps: np.ndarray, path=None, title="Feature maps", limit: int = 32):
    """Channels of one activation ``(C, H, W)`` as grayscale images."""
    maps = np.asarray(maps)[:limit]
    return plot_image_grid(maps[:, None], [f"channel {i}" for i in range(len(maps))], path,
                           suptitle=title)
