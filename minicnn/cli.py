"""The ``minicnn`` command line (also ``python -m minicnn``).

Exit codes: 0 success, 2 usage error (argparse), 1 failure with a one-line reason, 130 after
Ctrl-C (progress saved).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  minicnn train                                   LeNet-5 on MNIST
  minicnn train --dataset fashion-mnist --model mnist-cnn --epochs 5 --out runs/fashion
  minicnn evaluate runs/fashion                   accuracy, per-class table, confusion matrix
  minicnn predict runs/fashion shoe.png bag.jpg   top-3 classes per image
  minicnn datasets                                what it knows, where it looks, what it found
  minicnn bench --suite conv --plot conv.png      time layers and models against PyTorch
"""


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("reference", "im2col", "numba"),
                        help="kernel backend for conv and pooling (default: the fastest)")
    parser.add_argument("--threads", type=int, help="threads for the Numba kernels and BLAS")
    parser.add_argument("--data-dir", help="where to look for data sets first "
                                           "(else $MINICNN_DATA_DIR, the cache, /usr/share/datasets)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .data import dataset_names
    from .models import MODELS

    parser = argparse.ArgumentParser(
        prog="minicnn", description="Train, evaluate and use CNNs written from scratch.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a model; writes a run folder",
                           description="Train a CNN and write a run folder (model, config, "
                                       "history, figures).")
    train.add_argument("--dataset", default="mnist", choices=dataset_names())
    train.add_argument("--model", default="lenet5", choices=list(MODELS))
    train.add_argument("--epochs", type=int, default=None,
                       help="passes over the training set (default 5; 1 with --quick)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (default 0.05 for sgd, 0.001 for adam/adamw)")
    train.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    train.add_argument("--schedule", default="cosine", choices=("cosine", "step", "none"))
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit", type=int, help="use only this many training images")
    train.add_argument("--quick", action="store_true",
                       help="a fast look: 5,000 training and 1,000 test images, 1 epoch")
    train.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<model>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(train)

    evaluate = sub.add_parser("evaluate", help="test accuracy, per-class table, figures")
    evaluate.add_argument("run", help="a run folder written by `minicnn train`")
    evaluate.add_argument("--batch-size", type=int, default=256)
    _common(evaluate)

    predict = sub.add_parser("predict", help="top-3 classes for image files")
    predict.add_argument("run", help="a run folder written by `minicnn train`")
    predict.add_argument("images", nargs="+", help="PNG or JPEG files")
    predict.add_argument("--top", type=int, default=3)
    _common(predict)

    datasets = sub.add_parser("datasets", help="known data sets and where they were found")
    datasets.add_argument("--data-dir")

    from .bench.cli import DESCRIPTION as BENCH_DESCRIPTION, EXAMPLES as BENCH_EXAMPLES
    from .bench.cli import add_arguments as add_bench_arguments
    bench = sub.add_parser("bench", help="time layers and models against PyTorch",
                           description=BENCH_DESCRIPTION, epilog=BENCH_EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_arguments(bench)
    return parser


def _apply_runtime(args) -> None:
    from . import kernels

    if getattr(args, "backend", None):
        kernels.set_default_backend(args.backend)
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        from .kernels.threads import set_num_threads
        set_num_threads(args.threads)


def cmd_train(args) -> int:
    from .train import TrainConfig, evaluate, fit, load_run
    from .data import default_transform, load_dataset

    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 5)
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
    config = TrainConfig(dataset=args.dataset, model=args.model, epochs=epochs,
                         batch_size=args.batch_size, lr=lr, optimizer=args.optimizer,
                         schedule=args.schedule, weight_decay=args.weight_decay, seed=args.seed,
                         backend=args.backend, data_dir=args.data_dir,
                         limit=5000 if args.quick and args.limit is None else args.limit,
                         test_limit=1000 if args.quick else None,
                         val_size=500 if args.quick else 5000)
    out = Path(args.out or f"runs/{args.dataset}-{args.model}")
    if not args.resume and (out / "checkpoint.npz").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose "
                        "another --out")
    result = fit(config, out, resume=args.resume, progress=not args.no_progress)
    config, model, _ = load_run(out)
    test_set = load_dataset(config.dataset, "test", data_dir=config.data_dir,
                            limit=config.test_limit, seed=config.seed)
    evaluation = evaluate(model, test_set, transform=default_transform(test_set))
    _write_figures(out, result["history"], evaluation, test_set)
    print(f"run folder: {out}  (test accuracy {result['test_accuracy']:.2%}, "
          f"{result['seconds']:.0f} s)")
    return 0


def _write_figures(out: Path, history, evaluation, test_set) -> None:
    from . import viz

    if history:
        viz.plot_history(history, out / "curves.png")
    viz.plot_confusion(evaluation.confusion, test_set.classes, out / "confusion.png")
    viz.plot_misclassified(test_set.images, test_set.labels, evaluation.predictions,
                           test_set.classes, out / "misclassified.png")
    import matplotlib.pyplot as plt
    plt.close("all")


def cmd_evaluate(args) -> int:
    import json

    from .data import default_transform, load_dataset
    from .train import evaluate, load_run

    config, model, _ = load_run(args.run)
    test_set = load_dataset(config.dataset, "test", data_dir=args.data_dir or config.data_dir,
                            limit=config.test_limit, seed=config.seed)
    evaluation = evaluate(model, test_set, batch_size=args.batch_size,
                          transform=default_transform(test_set))
    print(f"{config.model} on {config.dataset} test set ({len(test_set)} images): "
          f"accuracy {evaluation.accuracy:.2%}, loss {evaluation.loss:.4f}")
    width = max(len(c) for c in test_set.classes)
    print(f"{'class':<{width}}  accuracy  images")
    for name, acc, total in zip(test_set.classes, evaluation.per_class_accuracy(),
                                evaluation.confusion.sum(axis=1)):
        print(f"{name:<{width}}  {acc:8.2%}  {total:6d}")
    run = Path(args.run)
    history_path = run / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    _write_figures(run, history, evaluation, test_set)
    print(f"figures: {run / 'confusion.png'}, {run / 'misclassified.png'}")
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from .data import DataError, load_image
    from .train import load_run

    config, model, meta = load_run(args.run)
    channels, height, width = meta.images.shape[1:]
    mean = np.asarray(meta.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta.std, dtype=np.float32).reshape(1, -1, 1, 1)
    model.eval()
    failures = 0
    for path in args.images:
        try:
            image = load_image(path, image_size=(height, width), channels=channels)
        except (DataError, OSError) as error:
            print(f"{path}: cannot use this image: {error}", file=sys.stderr)
            failures += 1
            continue
        x = (image[None].astype(np.float32) / 255.0 - mean) / std
        logits = model(x)[0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(probs)[::-1][:args.top]
        ranked = ", ".join(f"{meta.classes[i]} {probs[i]:.1%}" for i in top)
        print(f"{path}: {ranked}")
    if failures:
        raise UserError(f"{failures} of {len(args.images)} image(s) could not be classified")
    return 0


def cmd_datasets(args) -> int:
    from .data import describe_datasets

    for entry in describe_datasets(args.data_dir):
        shape = "x".join(map(str, entry["image_shape"]))
        print(f"{entry['name']}: {entry['title']} ({shape}, {entry['num_classes']} classes)")
        for split, place in entry["found"].items():
            print(f"  {split:<5}  {place or 'not found'}")
        if not all(entry["found"].values()):
            print("  looks in: " + ", ".join(map(str, entry["searched"])))
            if entry.get("mirrors"):
                print(f"  then downloads into {entry['cache_dir']} from: "
                      + ", ".join(entry["mirrors"]))
    return 0


def cmd_bench(args) -> int:
    from .bench import BenchError
    from .bench.cli import run_from_args

    try:
        return run_from_args(args)
    except BenchError as error:
        raise UserError(str(error)) from error


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "datasets": cmd_datasets, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import DataError
    from .train import TrainingError

    try:
        _apply_runtime(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("minicnn: interrupted", file=sys.stderr)
        return 130
    except (UserError, DataError, TrainingError, FileNotFoundError, ValueError) as error:
        print(f"minicnn: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
