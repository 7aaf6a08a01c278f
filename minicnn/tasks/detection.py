"""Detection: find and classify every object in a scene. The grid detector's loss, mAP@0.5,
precision-recall figures, ``minicnn detect``.

The detector itself (its head, decoding, NMS, the metric, inference on files of any size)
lives in :mod:`minicnn.detection`; this module is what the training loop, the command line and
the explorer need to treat it as a task.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..argtypes import UserError
from ..detection.evaluation import DetectionEvaluation, detection_loss, evaluate_detector
from ..detection.inference import DEFAULT_THRESHOLD
from .base import Task, each_image


def _box_line(detections) -> str:
    if not len(detections.boxes):
        return "nothing found"
    return ", ".join(f"{label} {score:.0%} at ({', '.join(f'{v:.0f}' for v in box)})"
                     for label, score, box in zip(detections.labels, detections.scores,
                                                  detections.boxes))


class DetectionTask(Task):
    """Every object in a scene: :class:`~minicnn.detection.DetectionLoss`, mAP@0.5."""

    name = "detection"
    use_command = "detect"
    # Measured recipe: see the README's "Results".
    recipe = dict(epochs=3, batch_size=32, optimizer="adam", augment=False, warmup_epochs=0.1)
    recipe_lr = {"sgd": 0.01, "adam": 2e-3, "adamw": 2e-3}
    counts_correct = False

    def check_config(self, config) -> None:
        if config.augment:
            raise ValueError("augment must be off for detection: shifting a scene's pixels "
                             "would move its objects away from their boxes")

    def default_augment(self, images: np.ndarray) -> bool:
        return False

    def loss(self, model):
        return detection_loss(model)

    def batch_correct(self, outputs, targets) -> None:
        return None             # no right-or-wrong per image; mAP is measured per epoch

    def evaluate(self, model, dataset, transform=None,
                 batch_size: int = 256) -> DetectionEvaluation:
        return evaluate_detector(model, dataset, transform=transform, batch_size=batch_size)

    def validation_record(self, evaluation: DetectionEvaluation) -> dict:
        return {"val_loss": evaluation.loss, "val_map": evaluation.map}

    def result(self, evaluation: DetectionEvaluation) -> dict:
        return {"test_map": evaluation.map, "test_loss": evaluation.loss,
                "test_ap": [None if np.isnan(v) else float(v) for v in evaluation.per_class_ap]}

    def summary(self, evaluation: DetectionEvaluation, count: int) -> str:
        return f"test mAP@0.5 {evaluation.map:.4f} ({count} scenes)"

    def write_figures(self, out: Path, history: list, evaluation: DetectionEvaluation,
                      test_set, count: int = 12) -> list[Path]:
        """``curves.png``, ``precision_recall.png`` and ``detections.png`` in a run folder."""
        import matplotlib.pyplot as plt

        from ..detection.figures import (plot_detection_history, plot_detections,
                                         plot_precision_recall)

        written = []
        if history:
            plot_detection_history(history, out / "curves.png")
            written.append(out / "curves.png")
        plot_precision_recall(evaluation.curves, test_set.classes, out / "precision_recall.png",
                              title=f"Precision-recall at IoU 0.5 (mAP {evaluation.map:.3f})")
        count = min(count, len(test_set))
        plot_detections(test_set.images[:count] / 255.0, evaluation.detections[:count],
                        test_set.classes, out / "detections.png",
                        ground_truth=evaluation.ground_truth[:count],
                        threshold=DEFAULT_THRESHOLD,
                        title=f"first {count} test scenes: detections (score >= "
                              f"{DEFAULT_THRESHOLD}), ground truth dashed")
        written += [out / "precision_recall.png", out / "detections.png"]
        plt.close("all")
        return written

    def finished_line(self, out: Path, result: dict, seconds: float) -> str:
        return f"run folder: {out}  (test mAP@0.5 {result['test_map']:.4f}, {seconds:.0f} s)"

    def report(self, config, evaluation: DetectionEvaluation, test_set, meta) -> None:
        print(f"{config.model} on {config.dataset} test scenes ({len(test_set)} scenes, "
              f"{sum(len(g['boxes']) for g in evaluation.ground_truth)} objects): "
              f"mAP@0.5 {evaluation.map:.4f}, loss {evaluation.loss:.4f}")
        width = max(len(c) for c in test_set.classes)
        print(f"{'class':<{width}}  AP@0.5  objects")
        for name, curve in zip(test_set.classes, evaluation.curves):
            ap = ("     -" if np.isnan(curve.average_precision)
                  else f"{curve.average_precision:6.3f}")
            print(f"{name:<{width}}  {ap}  {curve.ground_truths:7d}")

    def use(self, args, model, meta) -> int:
        """``minicnn detect``: the boxes in each image file, as text, JSON or drawn PNGs."""
        from ..detection.inference import detect_file
        from ..preprocess import image_files

        paths = image_files(args.images)
        out = Path(args.out) if args.out else None
        if out is not None and len(paths) > 1 and out.suffix:
            raise UserError(f"--out {out}: with {len(paths)} images --out is a folder (one "
                            "PNG per image), not a file")

        def read(path):
            return detect_file(model, meta, path, enhance=not args.no_preprocess,
                               threshold=args.threshold)

        def report(path, found):
            if found.inverted:
                print(f"{path}: dark objects on a light background: inverted", file=sys.stderr)
            if not args.json:
                print(f"{path}: {_box_line(found)}")
            if out is not None:
                target = (out if len(paths) == 1 and out.suffix
                          else out / f"{Path(path).stem}_boxes.png")
                self._draw(found, meta, target, args.threshold, Path(path).name)
                if not args.json:
                    print(f"  drawn in {target}")
            return {"image": str(path), "inverted": found.inverted, "boxes": found.to_json()}

        return each_image(paths, read, report, args.json, "could not be used")

    @staticmethod
    def _draw(found, meta, target: Path, threshold: float, title: str) -> None:
        """One picture's boxes, labels and scores, drawn into the PNG ``target``."""
        import matplotlib.pyplot as plt

        from ..detection.figures import plot_detections

        target.parent.mkdir(parents=True, exist_ok=True)
        plot_detections([found.image], [{"boxes": found.boxes, "scores": found.scores,
                                         "classes": found.classes}],
                        meta.classes, target, threshold=threshold, columns=1, title=title)
        plt.close("all")

    def explorer(self, model, meta, name: str):
        from ..explore.detection import DetectionExplorer

        return DetectionExplorer(model, meta, name=name)
