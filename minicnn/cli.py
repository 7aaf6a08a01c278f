"""The ``minicnn`` command line (also ``python -m minicnn``).

Exit codes: 0 success; 2 usage error, refused at parse time with one line (a value out of
range, an unknown choice, an ``--out`` that is a file); 1 failure with a one-line reason;
130 after Ctrl-C (progress saved); 141 when the reader of the output went away (``| head``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .argtypes import (UserError, non_negative_float, non_negative_int, positive_int,
                       thread_count, whole_number)
from .config import BASE_RECIPE, QUICK

EXAMPLES = """examples:
  minicnn train                                   LeNet-5 on MNIST
  minicnn train --dataset fashion-mnist --model mnist-cnn --epochs 5 --out runs/fashion
  minicnn train --out runs/fashion --resume --epochs 8    continue, or extend to 8 epochs
  minicnn evaluate runs/fashion                   accuracy, per-class table, confusion matrix
  minicnn predict runs/fashion shoe.png bag.jpg   top-3 classes per image
  minicnn train --dataset mnist-scenes --model tiny-detector --out runs/scenes
  minicnn detect runs/scenes scene.png --out boxes.png   find every digit: boxes, labels, scores
  minicnn explore runs/fashion                    draw or upload, watch every layer (a local page)
  minicnn datasets                                what it knows, where it looks, what it found
  minicnn bench --suite conv --plot conv.png      time layers and models against PyTorch
  minicnn export runs/fashion fashion.onnx        the trained model as ONNX
  minicnn import net.onnx --out runs/net --dataset mnist   a run folder from an ONNX file
"""

class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (the usage text is one ``--help`` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------------------------
# Argument types: nonsense is refused while parsing, with exit code 2
# ---------------------------------------------------------------------------------------------
def _run_folder(text: str) -> str:
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a run folder")
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("reference", "im2col", "numba"),
                        help="kernel backend for conv and pooling (default: the fastest)")
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="threads for the Numba kernels and BLAS (at most the cores here)")
    parser.add_argument("--data-dir", help="where to look for data sets first "
                                           "(else $MINICNN_DATA_DIR, the cache, /usr/share/datasets)")


def _add_train_arguments(train: argparse.ArgumentParser) -> None:
    from .data import dataset_names
    from .models import MODELS

    # Options default to None so that a resumed run can tell what was typed; the recipe
    # (minicnn.config.recipe_config) fills in the rest.
    d = BASE_RECIPE
    train.add_argument("--dataset", choices=dataset_names(), help=f"default {d['dataset']}")
    train.add_argument("--model", choices=list(MODELS), help=f"default {d['model']}")
    train.add_argument("--epochs", type=positive_int, metavar="N",
                       help=f"passes over the training set (default {d['epochs']}; "
                            f"{QUICK['epochs']} with --quick); with --resume: extend the run "
                            "to N epochs in all")
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       help=f"default {d['batch_size']}")
    train.add_argument("--lr", type=non_negative_float,
                       help="learning rate (default 0.05 for sgd, 0.001 for adam/adamw)")
    train.add_argument("--optimizer", choices=("sgd", "adam", "adamw"),
                       help=f"default {d['optimizer']}")
    train.add_argument("--momentum", type=non_negative_float,
                       help=f"SGD momentum (default {d['momentum']})")
    train.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                       help="SGD: Nesterov momentum (default on for sgd with momentum > 0)")
    train.add_argument("--weight-decay", type=non_negative_float,
                       help="L2 penalty for sgd/adam, decoupled decay for adamw (default "
                            "0.0005 for sgd, 0 for adam, 0.01 for adamw; 0 always means none)")
    train.add_argument("--schedule", choices=("warmup-cosine", "cosine", "step", "none"),
                       help=f"learning-rate schedule (default {d['schedule']}: per batch, "
                            "linear warm-up from --lr/10 to --lr over --warmup-epochs, then "
                            "cosine to 0 at the end of the run; cosine: per epoch, from --lr "
                            "to 0; step: see --step-size; none: constant)")
    train.add_argument("--warmup-epochs", type=non_negative_float, metavar="E",
                       help=f"warmup-cosine: warm-up length in epochs, fractions allowed "
                            f"(default {d['warmup_epochs']})")
    train.add_argument("--step-size", type=positive_int, metavar="N",
                       help=f"step schedule: multiply the learning rate by --gamma every N "
                            f"epochs (default {d['step_size']})")
    train.add_argument("--gamma", type=non_negative_float,
                       help=f"step schedule: the factor (default {d['gamma']})")
    train.add_argument("--seed", type=non_negative_int, help=f"default {d['seed']}")
    train.add_argument("--limit", type=positive_int, metavar="N",
                       help="use only this many training images")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="augment the training images: random shifts of up to 2 pixels "
                            "(grayscale), or 4-pixel crops and mirroring (colour) (default on)")
    train.add_argument("--val-size", type=whole_number(0), metavar="N",
                       help=f"hold out N training images to report validation accuracy after "
                            f"each epoch (default {d['val_size']}: train on the whole training "
                            f"split; at most a fifth of it is held out; {QUICK['val_size']} "
                            "with --quick)")
    train.add_argument("--quick", action="store_true",
                       help=f"a fast look: {QUICK['limit']:,} training and "
                            f"{QUICK['test_limit']:,} test images, {QUICK['epochs']} epoch, "
                            "in runs/<dataset>-<model>-quick")
    train.add_argument("--out", type=_run_folder, default=None,
                       help="run folder (default runs/<dataset>-<model>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint, with its "
                            "stored settings")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(train)


DETECT_EXAMPLES = """examples:
  minicnn detect runs/scenes scene.png --out boxes.png   draw boxes, labels and scores
  minicnn detect runs/scenes a.png b.png --json          [{"image", "boxes": [{"label",
                                                          "score", "box": [x0, y0, x1, y1]}]}]
"""


def _add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    from .detection.inference import DEFAULT_THRESHOLD

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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="minicnn", description="Train, evaluate and use CNNs written from scratch.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a model; writes a run folder",
                           description="Train a CNN and write a run folder (model, config, "
                                       "history, figures).")
    _add_train_arguments(train)

    evaluate = sub.add_parser("evaluate", help="test accuracy, per-class table, figures")
    evaluate.add_argument("run", help="a run folder written by `minicnn train`")
    evaluate.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    evaluate.add_argument("--int8", action="store_true",
                          help="evaluate the int8 model (model.int8.npz, made by "
                               "`minicnn quantize RUN`)")
    _common(evaluate)

    predict = sub.add_parser("predict", help="top classes for image files",
                             description="Classify image files (or every image in a folder) "
                                         "with a trained run; needs no data set.")
    predict.add_argument("run", help="a run folder written by `minicnn train`")
    predict.add_argument("images", nargs="+", help="PNG, JPEG, BMP or GIF files, or folders")
    predict.add_argument("--top", type=positive_int, default=3, metavar="K",
                         help="how many classes to show per image (default 3)")
    predict.add_argument("--json", action="store_true",
                         help='print JSON: [{"image", "inverted", "top": [{"label", '
                              '"probability"}]}]')
    predict.add_argument("--no-preprocess", action="store_true",
                         help="only resize and convert: no inverting, cropping or centring")
    predict.add_argument("--int8", action="store_true",
                         help="use the int8 model (model.int8.npz, made by "
                              "`minicnn quantize RUN`)")
    _common(predict)

    detect = sub.add_parser("detect", help="find and classify every object in image files",
                            description="Find every object (digit) in image files of any size "
                                        "with a trained detection run; needs no data set.",
                            epilog=DETECT_EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_detect_arguments(detect)
    _common(detect)

    from .explore import port_number
    explore = sub.add_parser("explore", help="a local page: draw an image, watch every layer",
                             description="Serve a page on this machine where you draw or upload "
                                         "an image and see the run's preprocessing, every "
                                         "layer's output, the prediction and its saliency.")
    explore.add_argument("run", help="a run folder written by `minicnn train`")
    explore.add_argument("--port", type=port_number, default=8765,
                         help="port to serve on (default 8765; 0 picks a free one)")
    explore.add_argument("--host", default="127.0.0.1",
                         help="interface to bind (default 127.0.0.1, this machine only; "
                              "anything else prints a warning)")
    explore.add_argument("--no-browser", action="store_true",
                         help="only serve; do not open a browser")
    _common(explore)

    datasets = sub.add_parser("datasets", help="known data sets and where they were found")
    datasets.add_argument("--data-dir")

    from .bench.cli import DESCRIPTION as BENCH_DESCRIPTION, EXAMPLES as BENCH_EXAMPLES
    from .bench.cli import add_arguments as add_bench_arguments
    bench = sub.add_parser("bench", help="time layers and models against PyTorch",
                           description=BENCH_DESCRIPTION, epilog=BENCH_EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_arguments(bench)
    _add_onnx_commands(sub)
    _add_quantize_command(sub)
    return parser


def _add_quantize_command(sub) -> None:
    """``quantize``: an int8 version of a trained classifier (:mod:`minicnn.quant`)."""
    from .quant.calibrate import METHODS

    quantize = sub.add_parser("quantize", help="make an int8 version of a trained classifier",
                              description="Calibrate on training images, quantise the run's "
                                          "model to int8 (uint8 activations, per-channel int8 "
                                          "weights) and write model.int8.npz beside "
                                          "model.npz; prints float and int8 test accuracy. "
                                          "Then: evaluate / predict / export with --int8.")
    quantize.add_argument("run", help="a classification run folder written by `minicnn train`")
    quantize.add_argument("--method", choices=METHODS, default="minmax",
                          help="how each activation's range is chosen (default minmax; "
                               "percentile: 99.99th percentile at each tail; entropy: "
                               "TensorRT's KL-divergence threshold)")
    quantize.add_argument("--calibration-images", type=positive_int, default=512, metavar="N",
                          help="training images to calibrate on (default 512)")
    quantize.add_argument("--seed", type=non_negative_int, default=0,
                          help="picks the calibration images (default 0)")
    _common(quantize)


def _add_onnx_commands(sub) -> None:
    """``export`` and ``import``: a run folder to ONNX and back (:mod:`minicnn.onnx.runs`)."""
    export = sub.add_parser("export", help="write a run's trained model as an ONNX file",
                            description="Write a run's trained model as ONNX (batch size "
                                        "free; the input is the normalised image; mean, std "
                                        "and class names in the file's metadata). Needs the "
                                        "onnx package: pip install 'minicnn[onnx]'.")
    export.add_argument("run", help="a run folder written by `minicnn train`")
    export.add_argument("out", help="the .onnx file to write")
    export.add_argument("--data-dir", help="where to look for an old run's data set")
    export.add_argument("--int8", action="store_true",
                        help="export the int8 model (model.int8.npz) as a QDQ graph that "
                             "ONNX Runtime runs with integer kernels")
    imported = sub.add_parser("import", help="make a run folder from an ONNX file",
                              description="Make a run folder from an .onnx file (e.g. a "
                                          "network trained in PyTorch) whose graph is one of "
                                          "minicnn's models, so that evaluate, predict, detect "
                                          "and explore open it.")
    imported.add_argument("model_file", metavar="MODEL.onnx", help="the ONNX file to read")
    imported.add_argument("--out", type=_run_folder, required=True, help="run folder to create")
    from .data import dataset_names
    from .models import MODELS
    imported.add_argument("--dataset", required=True, choices=dataset_names(),
                          help="the data set it is for (input shape, classes; mean and std "
                               "unless the file carries its own)")
    imported.add_argument("--model", choices=list(MODELS),
                          help="the minicnn model the graph must be (default: found by "
                               "comparing the graph with every model of the data set's task)")


def _apply_runtime(args) -> None:
    from . import kernels

    if getattr(args, "backend", None):
        kernels.set_default_backend(args.backend)
    if getattr(args, "threads", None) is not None:
        from .kernels.threads import set_num_threads
        set_num_threads(args.threads)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
TRAIN_SETTINGS = ("dataset", "model", "epochs", "batch_size", "lr", "optimizer", "momentum",
                  "nesterov", "weight_decay", "schedule", "warmup_epochs", "step_size", "gamma",
                  "seed", "limit", "val_size", "augment", "backend", "data_dir")


def config_from_args(args):
    """The :class:`~minicnn.config.TrainConfig` of a new run: what was typed over the recipe
    (:func:`minicnn.config.recipe_config`)."""
    from .config import recipe_config

    return recipe_config(quick=args.quick,
                         **{name: getattr(args, name) for name in TRAIN_SETTINGS})


def _default_out(args) -> Path:
    dataset = args.dataset or BASE_RECIPE["dataset"]
    model = args.model or BASE_RECIPE["model"]
    return Path("runs") / f"{dataset}-{model}{'-quick' if args.quick else ''}"


# Settings a resumed run takes from its config.json, whatever the command line says.
RESUME_KEEPS = ("dataset", "model", "batch_size", "optimizer", "lr", "momentum", "nesterov",
                "weight_decay", "schedule", "warmup_epochs", "step_size", "gamma", "seed",
                "limit", "val_size", "augment")


def _report_resume(args, stored) -> None:
    """Say what a resumed run keeps from its config and which typed values it ignores."""
    def option(key, value):
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            return flag if value else "--no-" + flag[2:]
        return f"{flag} {value}"

    ignored = [f"{option(key, getattr(args, key))} (keeps {getattr(stored, key)})"
               for key in RESUME_KEEPS
               if getattr(args, key) is not None and getattr(args, key) != getattr(stored, key)]
    if args.quick:
        ignored.append("--quick")
    if args.backend and stored.backend and args.backend != stored.backend:
        ignored.append(f"--backend {args.backend} (keeps {stored.backend})")
    kept = ", ".join(f"{key}={getattr(stored, key)}" for key in RESUME_KEEPS)
    extend = (f"; training to {args.epochs} epochs in all" if args.epochs
              else f"; {stored.epochs} epochs")
    print(f"resuming with the stored settings: {kept}{extend}")
    if ignored:
        print("ignored on resume: " + ", ".join(ignored))


def cmd_train(args) -> int:
    from . import tasks
    from .runfolder import read_config
    from .train import fit

    out = Path(args.out) if args.out else _default_out(args)
    if args.resume:
        stored = read_config(out, f"nothing to resume: {out} is not a run folder (no "
                                  "config.json)")
        _report_resume(args, stored)
        config = stored
    else:
        if (out / "config.json").exists() or (out / "checkpoint.npz").exists():
            raise UserError(f"{out} already holds a run; pass --resume to continue it or "
                            "choose another --out")
        config = config_from_args(args)
    result = fit(config, out, resume=args.resume, progress=not args.no_progress,
                 epochs=args.epochs if args.resume else None,
                 data_dir=args.data_dir if args.resume else None)
    task = tasks.get(result["task"])
    task.write_figures(out, result["history"], result["evaluation"], result["test_set"])
    print(task.finished_line(out, result, result["seconds"]))
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate, predict, detect, datasets, bench, explore
# ---------------------------------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from . import tasks
    from .data import default_transform, load_dataset
    from .runfolder import load_run, read_history

    config, model, meta = load_run(args.run, data_dir=args.data_dir)
    if args.int8:
        model = _int8_model(args)
    run = Path(args.run)
    history = read_history(run)          # checked before the (long) evaluation
    task = tasks.for_model(config.model)
    test_set = load_dataset(config.dataset, "test", data_dir=args.data_dir or config.data_dir,
                            limit=config.test_limit, seed=config.seed)
    # Normalise with the run's own training statistics, whatever copy of the data is used.
    test_set.mean, test_set.std = meta.mean, meta.std
    evaluation = task.evaluate(model, test_set, transform=default_transform(test_set),
                               batch_size=args.batch_size)
    if args.int8:
        print(f"int8 model ({run / 'model.int8.npz'})")
    task.report(config, evaluation, test_set, meta)
    written = task.write_figures(run, history, evaluation, test_set)
    print("figures: " + ", ".join(str(path) for path in written))
    return 0


def _use_run(args, command: str) -> int:
    """``predict`` and ``detect``: load the run, check its task uses ``command``, run it."""
    from . import tasks
    from .runfolder import load_run

    config, model, meta = load_run(args.run, data_dir=args.data_dir)
    task = tasks.for_command(config, command)
    if getattr(args, "int8", False):
        model = _int8_model(args)
    return task.use(args, model, meta)


def _int8_model(args):
    """The run's int8 model (``model.int8.npz``) in place of the float one; a run without it
    is refused in one line."""
    from .quant import load_run_int8

    return load_run_int8(args.run, data_dir=args.data_dir)[1]


def cmd_predict(args) -> int:
    return _use_run(args, "predict")


def cmd_detect(args) -> int:
    return _use_run(args, "detect")


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


def cmd_explore(args) -> int:
    from .explore import ExploreError, serve

    try:
        return serve(args.run, host=args.host, port=args.port,
                     open_browser=not args.no_browser, data_dir=args.data_dir)
    except ExploreError as error:
        raise UserError(str(error)) from error


def cmd_export(args) -> int:
    from .onnx.runs import export_run

    _require_onnx_package()
    try:
        if args.int8:
            from .quant import export_onnx, load_run_int8

            _, qmodel, meta = load_run_int8(args.run, data_dir=args.data_dir)
            path = export_onnx(qmodel, args.out, meta.input_shape, meta=meta)
        else:
            path = export_run(args.run, args.out, data_dir=args.data_dir)
    except OSError as error:        # the run is read through load_run, which says its own
        raise UserError(f"cannot write {args.out}: {error.strerror or error}") from None
    print(f"wrote {path}")
    return 0


def cmd_import(args) -> int:
    from .onnx.runs import import_run

    _require_onnx_package()
    try:
        result = import_run(args.model_file, args.out, args.dataset, model_name=args.model)
    except OSError as error:        # the .onnx is read by minicnn.onnx, which says its own
        raise UserError(f"cannot write the run folder {args.out}: "
                        f"{error.strerror or error}") from None
    print(f"imported {result['source']} as {result['model']} into {result['out']}")
    return 0


def cmd_quantize(args) -> int:
    from .quant import quantize_run

    result = quantize_run(args.run, method=args.method,
                          calibration_images=args.calibration_images,
                          data_dir=args.data_dir, seed=args.seed)
    print(f"calibrated on {result['calibration_images']} training images ({result['method']})")
    print(f"test accuracy ({result['test_images']} images): float "
          f"{result['float_accuracy']:.2%}, int8 {result['int8_accuracy']:.2%}")
    ratio = result["float_size"] / max(result["int8_size"], 1)
    print(f"size: model.npz {result['float_size']:,} bytes, model.int8.npz "
          f"{result['int8_size']:,} bytes ({ratio:.1f}x smaller)")
    print(f"wrote {result['path']} and {result['info_path']}")
    return 0


def _require_onnx_package() -> None:
    try:
        import onnx  # noqa: F401 - only checking that it is installed
    except ImportError:
        raise UserError("this command needs the onnx package: pip install "
                        "'minicnn[onnx]'") from None


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "detect": cmd_detect, "datasets": cmd_datasets, "bench": cmd_bench,
            "explore": cmd_explore, "export": cmd_export, "import": cmd_import,
            "quantize": cmd_quantize}


def _quiet_broken_pipe() -> int:
    """The reader of our output has gone (``minicnn ... | head``): stop without a traceback.

    stdout is pointed at /dev/null so that the interpreter's final flush cannot fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141      # 128 + SIGPIPE, what a tool killed by the broken pipe reports


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import DataError
    from .train import TrainingError

    try:
        _apply_runtime(args)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()      # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print("minicnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (UserError, DataError, TrainingError, FileNotFoundError, ValueError) as error:
        print(f"minicnn: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
