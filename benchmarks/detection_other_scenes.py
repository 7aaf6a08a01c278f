"""Detect digits in scenes made by other code than ``mnist-scenes``: precision and recall.

The issue's second target: scenes made by someone else from the MNIST *test* digits (same
size range, any placement) are found with precision and recall above 0.85 at IoU 0.5. These
scenes share nothing with :func:`minicnn.detection.make_scenes` but the digits' source:

- placement: a 3x3 layout of 32-pixel slots, each digit centred at a random point of its own
  slot (so digits spread over the canvas, and may touch), instead of uniform rejection
  sampling;
- resizing: the whole 28x28 MNIST frame (padding included) scaled by nearest-neighbour index
  mapping so that the 20-pixel ink box becomes 20-40 pixels, instead of Pillow's bilinear
  resize of the ink crop;
- boxes: the bounds of the pasted pixels brighter than 40/255 (MNIST's faint anti-aliased
  edge pixels are left out), instead of the crop's exact extent;
- pixels: composited by addition and saturated, not by maximum.

The trained run sees them as ``minicnn detect`` sees a file (:func:`detect_image`, default
preprocessing, score threshold 0.5).

Usage::

    python benchmarks/detection_other_scenes.py runs/mnist-scenes-tiny-detector [--scenes 1000]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def nearest_resize(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (h, w) scaled to ``side x side`` by nearest-neighbour index mapping."""
    rows = (np.arange(side) * image.shape[0] / side).astype(int)
    cols = (np.arange(side) * image.shape[1] / side).astype(int)
    return image[rows][:, cols]


def other_scenes(digits: np.ndarray, labels: np.ndarray, count: int, seed: int = 2026,
                 canvas: int = 96, ink_threshold: int = 40):
    """``count`` scenes of 1-4 digits: ``(images uint8 (count, canvas, canvas), list of
    {"boxes": (k, 4), "classes": (k,)})``; see the module docstring for how they differ."""
    rng = np.random.default_rng(seed)
    slot = canvas // 3
    images = np.zeros((count, canvas, canvas), dtype=np.uint8)
    truth = []
    for n in range(count):
        taken: list[tuple[int, int, int, int]] = []
        classes: list[int] = []
        wanted = int(rng.integers(1, 5))
        for place in rng.permutation(9):
            if len(taken) == wanted:
                break
            index = int(rng.integers(len(digits)))
            ink_side = int(rng.integers(20, 41))
            frame = nearest_resize(digits[index], round(ink_side * 28 / 20))
            ys, xs = np.nonzero(frame > ink_threshold)
            if ys.size == 0:
                continue
            centre_y = (place // 3) * slot + rng.uniform(0, slot)
            centre_x = (place % 3) * slot + rng.uniform(0, slot)
            top = int(round(centre_y - (ys.min() + ys.max() + 1) / 2))
            left = int(round(centre_x - (xs.min() + xs.max() + 1) / 2))
            box = (left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1)
            if box[0] < 0 or box[1] < 0 or box[2] > canvas or box[3] > canvas:
                continue                                  # would leave the canvas
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                   for b in taken):
                continue                                  # would overlap a digit
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + frame.shape[0], canvas), min(left + frame.shape[1], canvas)
            patch = frame[y0 - top:y1 - top, x0 - left:x1 - left].astype(np.int32)
            images[n, y0:y1, x0:x1] = np.minimum(images[n, y0:y1, x0:x1] + patch, 255)
            taken.append(box)
            classes.append(int(labels[index]))
        truth.append({"boxes": np.asarray(taken, dtype=np.float64).reshape(-1, 4),
                      "classes": np.asarray(classes, dtype=np.int64)})
    return images, truth


def measure(run: str, count: int, seed: int, data_dir=None, threshold: float = 0.5) -> dict:
    from minicnn.data import load_dataset
    from minicnn.detection import mean_average_precision, precision_recall_at
    from minicnn.detection.inference import detect_image
    from minicnn.train import load_run

    config, model, meta = load_run(run, data_dir=data_dir)
    test = load_dataset("mnist", "test", data_dir=data_dir or config.data_dir)
    images, truth = other_scenes(test.images[:, 0], test.labels, count, seed)
    found = []
    for image in images:
        d = detect_image(model, meta, image / 255.0, threshold=0.01)
        found.append({"boxes": d.boxes, "scores": d.scores, "classes": d.classes})
    precision, recall = precision_recall_at(found, truth, threshold)
    mean, _ = mean_average_precision(found, truth, len(meta.classes))
    return {"run": str(run), "scenes": count, "seed": seed, "objects":
            int(sum(len(t["boxes"]) for t in truth)), "score_threshold": threshold,
            "precision": precision, "recall": recall, "map": mean}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--data-dir")
    parser.add_argument("--figure", help="draw the first 12 scenes with their detections here")
    args = parser.parse_args(argv)
    result = measure(args.run, args.scenes, args.seed, args.data_dir)
    print(json.dumps(result, indent=2))
    if args.figure:
        from minicnn.data import load_dataset
        from minicnn.detection.figures import plot_detections
        from minicnn.detection.inference import detect_image
        from minicnn.train import load_run

        config, model, meta = load_run(args.run, data_dir=args.data_dir)
        test = load_dataset("mnist", "test", data_dir=args.data_dir or config.data_dir)
        images, truth = other_scenes(test.images[:, 0], test.labels, 12, args.seed)
        found = [vars(detect_image(model, meta, image / 255.0)) for image in images]
        plot_detections(images / 255.0, found, meta.classes, args.figure, ground_truth=truth,
                        title="scenes made by other code: detections, ground truth dashed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
