"""Whole-image classification: cross-entropy, accuracy, a confusion matrix, ``minicnn predict``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import inference, nn
from ..data import DataLoader
from ..nn.functional import log_softmax, softmax
from .base import Task, each_image


def predict_logits(model: nn.Module, images_or_loader, batch_size: int = 256) -> np.ndarray:
    """Logits ``(N, classes)`` for a loader (or a float32 array ``(N, C, H, W)``), eval mode
    (through :func:`minicnn.inference.forward`, which picks the plan or the layers)."""
    if isinstance(images_or_loader, np.ndarray):
        batches = (images_or_loader[i:i + batch_size]
                   for i in range(0, len(images_or_loader), batch_size))
        return np.concatenate([_forward(model, x) for x in batches])
    return np.concatenate([_forward(model, x) for x, _ in images_or_loader])


def _forward(model, x):
    # A model that is not an nn.Module (minicnn.quant's QuantizedModel) brings its own forward.
    if isinstance(model, nn.Module):
        return inference.forward(model, x)
    model.eval()
    return model(x)


@dataclass
class Evaluation:
    """A classifier measured on a data set.

    Attributes
    ----------
    accuracy, loss : float
        The fraction right, and the mean cross-entropy.
    confusion : ndarray (classes, classes)
        Rows: the true class; columns: the predicted one.
    predictions, labels : ndarray (N,)
    probabilities : ndarray (N, classes)
    """

    accuracy: float
    loss: float
    confusion: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray

    def per_class_accuracy(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.zeros(len(totals)),
                         where=totals > 0)


def evaluate(model: nn.Module, dataset, batch_size: int = 256, transform=None) -> Evaluation:
    """Accuracy, mean loss and confusion matrix of ``model`` on ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, transform=transform)
    logits = predict_logits(model, loader)
    labels = dataset.labels
    log_probs = log_softmax(logits, axis=1)
    predictions = logits.argmax(axis=1)
    classes = logits.shape[1]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    return Evaluation(accuracy=float((predictions == labels).mean()),
                      loss=float(-log_probs[np.arange(len(labels)), labels].mean()),
                      confusion=confusion, predictions=predictions,
                      probabilities=np.exp(log_probs), labels=labels)


class ClassificationTask(Task):
    """One label per image: :class:`minicnn.nn.CrossEntropyLoss`, accuracy."""

    name = "classification"
    use_command = "predict"

    def loss(self, model: nn.Module):
        return nn.CrossEntropyLoss()

    def batch_correct(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        return float(np.count_nonzero(outputs.argmax(axis=1) == targets))

    def evaluate(self, model: nn.Module, dataset, transform=None,
                 batch_size: int = 256) -> Evaluation:
        return evaluate(model, dataset, batch_size=batch_size, transform=transform)

    def validation_record(self, evaluation: Evaluation) -> dict:
        return {"val_loss": evaluation.loss, "val_accuracy": evaluation.accuracy}

    def result(self, evaluation: Evaluation) -> dict:
        return {"test_accuracy": evaluation.accuracy, "test_loss": evaluation.loss}

    def summary(self, evaluation: Evaluation, count: int) -> str:
        return f"test accuracy {evaluation.accuracy:.4f} ({count} images)"

    def write_figures(self, out: Path, history: list, evaluation: Evaluation,
                      test_set) -> list[Path]:
        """``curves.png`` (with a history), ``confusion.png`` and ``misclassified.png``."""
        import matplotlib.pyplot as plt

        from .. import viz

        written = []
        if history:
            viz.plot_history(history, out / "curves.png")
            written.append(out / "curves.png")
        viz.plot_confusion(evaluation.confusion, test_set.classes, out / "confusion.png")
        viz.plot_misclassified(test_set.images, test_set.labels, evaluation.predictions,
                               test_set.classes, out / "misclassified.png")
        plt.close("all")
        return written + [out / "confusion.png", out / "misclassified.png"]

    def finished_line(self, out: Path, result: dict, seconds: float) -> str:
        return f"run folder: {out}  (test accuracy {result['test_accuracy']:.2%}, {seconds:.0f} s)"

    def report(self, config, evaluation: Evaluation, test_set, meta) -> None:
        print(f"{config.model} on {config.dataset} test set ({len(test_set)} images): "
              f"accuracy {evaluation.accuracy:.2%}, loss {evaluation.loss:.4f}")
        width = max(len(c) for c in meta.classes)
        print(f"{'class':<{width}}  accuracy  images")
        for name, acc, total in zip(meta.classes, evaluation.per_class_accuracy(),
                                    evaluation.confusion.sum(axis=1)):
            print(f"{name:<{width}}  {acc:8.2%}  {total:6d}")

    def use(self, args, model, meta) -> int:
        """``minicnn predict``: the top classes of each image file, as text or JSON."""
        from ..preprocess import image_files, prepare_image

        mean = np.asarray(meta.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(meta.std, dtype=np.float32).reshape(-1, 1, 1)
        model.eval()

        def read(path):
            prepared = prepare_image(path, meta.input_shape, meta.dataset,
                                     enhance=not args.no_preprocess)
            image = ((prepared.image - mean) / std)[None].astype(np.float32, copy=False)
            return prepared, softmax(_forward(model, image)[0])

        def report(path, result):
            prepared, probs = result
            if prepared.inverted:
                print(f"{path}: dark ink on a light background: inverted", file=sys.stderr)
            top = np.argsort(probs)[::-1][:args.top]
            entry = {"image": str(path), "inverted": prepared.inverted,
                     "top": [{"label": meta.classes[i], "probability": float(probs[i])}
                             for i in top]}
            if not args.json:
                print(f"{path}: " + ", ".join(f"{t['label']} {t['probability']:.1%}"
                                              for t in entry["top"]))
            return entry

        return each_image(image_files(args.images), read, report, args.json,
                          "could not be classified")

    def explorer(self, model, meta, name: str):
        from ..explore.analysis import Explorer

        return Explorer(model, meta, name=name)
