"""The detection side of the command line: ``minicnn detect``, and what ``train`` and
``evaluate`` print and draw for a detection run. :mod:`minicnn.cli` registers and dispatches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .inference import DEFAULT_THRESHOLD

#: Defaults of a detection run where they differ from classification's (minicnn.cli's
#: TRAIN_DEFAULTS). Measured recipe: see the README's "Results".
TRAIN_DEFAULTS = dict(epochs=3, batch_size=32, optimizer="adam", augment=False,
                      warmup_epochs=0.1)
LR_DEFAULT = {"sgd": 0.01, "adam": 2e-3, "adamw": 2e-3}

EXAMPLES = """examples:
  minicnn detect runs/scenes scene.png --out boxes.png   draw boxes, labels and scores
  minicnn detect runs/scenes a.png b.png --json          [{"image", "boxes": [{"label",
                                                          "score", "box": [x0, y0, x1, y1]}]}]
"""


def add_detect_arguments(parser) -> None:
    from ..argtypes import non_negative_float

    parser.add_argument("run", help="a detection run folder written by `minicnn train`")
    parser.add_argument("images", nargs="+", help="PNG, JPEG, BMP or GIF files (any size, "
                                                  "gray or colour), or folders of them")
    parser.add_argument("--out", help="where to draw the boxes: a PNG file for one image, a "
                                      "folder (created) for several")
    parser.add_argument("--json", action="store_true",
                        help='print JSON: [{"image", "inverted", "boxes": [{"label", "score", '
                             '"box": [x0, y0, x1, y1]}]}], boxes in the image\'s pixels')
    parser.add_argument("--threshold", type=non_negative_float, default=DEFAULT_THRESHOLD,
                        metavar="S", help=f"report boxes scoring at least S (default "
                                          f"{DEFAULT_THRESHOLD})")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="only convert to gray and resize: no inverting of a light "
                             "background or contrast stretching")


def _user_error(message: str):
    from ..cli import UserError

    return UserError(message)


def require_task(config, wanted: str, command: str) -> None:
    """Refuse a run of the other task, naming the command it needs."""
    from ..models import task_of

    task = task_of(config.model)
    if task != wanted:
        other = "detect" if task == "detection" else "predict"
        raise _user_error(f"this is a {task} run ({config.model} on {config.dataset}); "
                          f"`minicnn {command}` needs a {wanted} run: use `minicnn {other}`")


def _box_line(detections) -> str:
    if not len(detections.boxes):
        return "nothing found"
    return ", ".join(f"{label} {score:.0%} at ({', '.join(f'{v:.0f}' for v in box)})"
                     for label, score, box in zip(detections.labels, detections.scores,
                                                  detections.boxes))


def cmd_detect(args) -> int:
    from ..data import DataError
    from ..preprocess import image_files
    from ..train import load_run
    from .figures import plot_detections
    from .inference import detect_file

    config, model, meta = load_run(args.run, data_dir=args.data_dir)
    require_task(config, "detection", "detect")
    paths = image_files(args.images)
    out = Path(args.out) if args.out else None
    if out is not None and len(paths) > 1 and out.suffix:
        raise _user_error(f"--out {out}: with {len(paths)} images --out is a folder (one "
                          "PNG per image), not a file")
    results, failures = [], 0
    for path in paths:
        try:
            found = detect_file(model, meta, path, enhance=not args.no_preprocess,
                                threshold=args.threshold)
        except (DataError, OSError) as error:
            print(f"{path}: cannot use this image: {error}", file=sys.stderr)
            failures += 1
            continue
        if found.inverted:
            print(f"{path}: dark objects on a light background: inverted", file=sys.stderr)
        results.append({"image": str(path), "inverted": found.inverted,
                        "boxes": found.to_json()})
        if not args.json:
            print(f"{path}: {_box_line(found)}")
        if out is not None:
            target = out if len(paths) == 1 and out.suffix else out / f"{Path(path).stem}_boxes.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            plot_detections([found.image], [{"boxes": found.boxes, "scores": found.scores,
                                             "classes": found.classes}],
                            meta.classes, target, threshold=args.threshold, columns=1,
                            title=Path(path).name)
            import matplotlib.pyplot as plt
            plt.close("all")
            if not args.json:
                print(f"  drawn in {target}")
    if args.json:
        print(json.dumps(results, indent=2))
    if failures:
        raise _user_error(f"{failures} of {len(paths)} image(s) could not be used")
    return 0


def write_figures(out: Path, history, evaluation, test_set, count: int = 12) -> list[Path]:
    """``curves.png``, ``precision_recall.png`` and ``detections.png`` in a run folder."""
    import matplotlib.pyplot as plt

    from .figures import plot_detection_history, plot_detections, plot_precision_recall

    written = []
    if history:
        plot_detection_history(history, out / "curves.png")
        written.append(out / "curves.png")
    plot_precision_recall(evaluation.curves, test_set.classes, out / "precision_recall.png",
                          title=f"Precision-recall at IoU 0.5 (mAP {evaluation.map:.3f})")
    count = min(count, len(test_set))
    plot_detections(test_set.images[:count] / 255.0, evaluation.detections[:count],
                    test_set.classes, out / "detections.png",
                    ground_truth=evaluation.ground_truth[:count], threshold=DEFAULT_THRESHOLD,
                    title=f"first {count} test scenes: detections (score >= "
                          f"{DEFAULT_THRESHOLD}), ground truth dashed")
    written += [out / "precision_recall.png", out / "detections.png"]
    plt.close("all")
    return written


def print_evaluation(config, evaluation, test_set) -> None:
    print(f"{config.model} on {config.dataset} test scenes ({len(test_set)} scenes, "
          f"{sum(len(g['boxes']) for g in evaluation.ground_truth)} objects): "
          f"mAP@0.5 {evaluation.map:.4f}, loss {evaluation.loss:.4f}")
    width = max(len(c) for c in test_set.classes)
    print(f"{'class':<{width}}  AP@0.5  objects")
    for name, curve in zip(test_set.classes, evaluation.curves):
        ap = "     -" if np.isnan(curve.average_precision) else f"{curve.average_precision:6.3f}"
        print(f"{name:<{width}}  {ap}  {curve.ground_truths:7d}")


def evaluate_run(args, config, model, meta) -> int:
    """``minicnn evaluate`` for a detection run: mAP, per-class AP, figures."""
    from ..data import default_transform, load_dataset
    from ..train import task_for

    test_set = load_dataset(config.dataset, "test", data_dir=args.data_dir or config.data_dir,
                            limit=config.test_limit, seed=config.seed)
    test_set.mean, test_set.std = meta.mean, meta.std
    evaluation = task_for(config.model).evaluate(model, test_set,
                                                 transform=default_transform(test_set),
                                                 batch_size=args.batch_size)
    print_evaluation(config, evaluation, test_set)
    run = Path(args.run)
    history_path = run / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    written = write_figures(run, history, evaluation, test_set)
    print("figures: " + ", ".join(str(p) for p in written))
    return 0
