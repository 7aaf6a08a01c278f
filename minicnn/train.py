"""The training loop: ``fit`` a model from a config, ``evaluate`` it, resume where it stopped.

A run lives in one folder::

    config.json       what was asked for (enough to rebuild the model)
    meta.json         what inference needs without the data set: input shape (C, H, W),
                      normalisation mean and std, class names, model and data-set names
    checkpoint.npz    model, optimiser and progress; written after every epoch (and on
                      Ctrl-C), so ``resume=True`` continues exactly where it stopped
    model.npz         the trained model's state dict
    history.json      per-epoch loss, accuracy, validation accuracy, learning rate, images/s,
                      wall time of the epoch's loop and the part of it spent in the steps
    result.json       test accuracy and loss (detection: mAP@0.5, per-class AP and loss)

Every file is written atomically (:func:`minicnn.serialize.atomic_write`), so a kill at any
moment leaves each file either as it was or complete. The checkpoint is the source of truth:
resuming rewrites ``history.json`` from it and removes temporary files a kill left behind.
The folder is created only once the data set is loaded and the model built, so a run that is
refused (unknown model, missing data, a training set smaller than one batch) leaves nothing.

What is trained is a *task*: a model, its loss, its metric and its data. Classification
(:class:`ClassificationTask`: cross-entropy, accuracy) and detection
(:class:`minicnn.detection.task.DetectionTask`: the grid detector's loss, mAP@0.5) go through
the same loop, checkpoints and resume; :func:`task_for` picks one from the model's name.

Exact resume works because nothing random is carried in hidden state: the weights come from
``rng=seed``, and epoch ``e`` shuffles (and augments) with ``default_rng((seed, e))``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import kernels, models, nn, optim
from .data import DataError, DataLoader, default_transform, load_dataset
from .serialize import load, remove_stale_temporaries, save, write_json, write_text


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, nothing to resume, ...); the message says why."""


@dataclass
class TrainConfig:
    """Everything that defines a run. Saved as ``config.json`` in the run folder.

    Every policy is explicit: SGD uses Nesterov momentum only when ``nesterov`` is set, the
    optimiser gets exactly ``weight_decay`` (0 means none, for AdamW too), the
    ``warmup-cosine`` schedule warms up linearly over ``warmup_epochs`` and then decays by a
    cosine to 0, both per batch, and the step schedule multiplies the learning rate by
    ``gamma`` every ``step_size`` epochs. ``val_size`` images are held out of the training
    split for validation after each epoch (0, the default: train on all of it).
    """

    dataset: str = "mnist"
    model: str = "lenet5"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"            # sgd | adam | adamw
    momentum: float = 0.9             # SGD only
    nesterov: bool = False            # SGD only; needs momentum > 0
    weight_decay: float = 0.0
    schedule: str = "warmup-cosine"   # warmup-cosine (per batch) | cosine | step | none
    warmup_epochs: float = 0.2        # warmup-cosine: linear warm-up length, in epochs
    step_size: int = 2                # step schedule: epochs between learning-rate drops
    gamma: float = 0.1                # step schedule: factor applied at each drop
    seed: int = 0
    backend: str | None = None        # kernel backend; None = the fastest available
    augment: bool | None = None       # None: crop+flip for 3-channel data sets only
    limit: int | None = None          # use only the first `limit` training images
    test_limit: int | None = None
    val_size: int = 0                 # held out from the training split for validation
    data_dir: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Read a config; one written before a field existed gets the policy it ran with."""
        values = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in values.items() if k in known}
        # Older versions used Nesterov whenever SGD had momentum, and dropped the step
        # schedule's learning rate every epochs // 3 epochs: keep resumed runs as they were.
        if "nesterov" not in values:
            values["nesterov"] = (values.get("optimizer", cls.optimizer) == "sgd"
                                  and values.get("momentum", cls.momentum) > 0)
        if "step_size" not in values:
            values["step_size"] = max(int(values.get("epochs", cls.epochs)) // 3, 1)
        # Before the per-batch schedule existed, the default was the per-epoch cosine and
        # 5,000 images were held out; configs always stored both, so these are fallbacks.
        values.setdefault("schedule", "cosine")
        values.setdefault("val_size", 5000)
        return cls(**values)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        for name in ("epochs", "batch_size", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "warmup_epochs"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs the sgd optimizer with momentum > 0")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of "
                             f"{', '.join(SCHEDULES)}")
        if isinstance(self.val_size, bool) or not isinstance(self.val_size, int) \
                or self.val_size < 0:
            raise ValueError(f"val_size must be a whole number >= 0, got {self.val_size!r}")
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of "
                             f"{', '.join(models.MODELS)}")
        self._check_task()

    def _check_task(self) -> None:
        """A detector needs a scene data set and a classifier a classification one."""
        from .data import get_spec
        from .data.errors import UnknownDatasetError

        try:
            spec = get_spec(self.dataset)
        except UnknownDatasetError:
            return          # refused with the list of names when the data set is loaded
        task = models.task_of(self.model)
        if spec.task != task:
            fitting = [name for name in models.MODELS if models.task_of(name) == spec.task]
            raise ValueError(f"model {self.model!r} is for {task} but data set {spec.name!r} "
                             f"is for {spec.task}; use one of these models with it: "
                             f"{', '.join(fitting)}")
        if task == "detection" and self.augment:
            raise ValueError("augment must be off for detection: shifting a scene's pixels "
                             "would move its objects away from their boxes")


@dataclass
class RunMeta:
    """What inference needs from a run, without its data set. Saved as ``meta.json``.

    Attributes
    ----------
    input_shape : (C, H, W)
    mean, std : list of float, one per channel, in [0, 1] pixel units
    classes : list of str
    model, dataset : str
        The names the run was trained with.
    """

    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    classes: list[str]
    model: str
    dataset: str

    @classmethod
    def from_dataset(cls, config: TrainConfig, dataset) -> "RunMeta":
        return cls(input_shape=tuple(int(d) for d in dataset.images.shape[1:]),
                   mean=[float(v) for v in np.atleast_1d(dataset.mean)],
                   std=[float(v) for v in np.atleast_1d(dataset.std)],
                   classes=[str(c) for c in dataset.classes], model=config.model,
                   dataset=config.dataset)

    @classmethod
    def from_dict(cls, values: dict) -> "RunMeta":
        values = dict(values)
        values.pop("format", None)
        values["input_shape"] = tuple(int(d) for d in values["input_shape"])
        return cls(**values)

    def to_dict(self) -> dict:
        return {"format": 1, **asdict(self), "input_shape": list(self.input_shape)}


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)


def make_optimizer(config: TrainConfig, parameters) -> optim.Optimizer:
    """The optimiser ``config`` asks for, with exactly its settings (no hidden defaults)."""
    name = config.optimizer.lower()
    if name == "sgd":
        return optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay, nesterov=config.nesterov)
    if name == "adam":
        return optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose sgd, adam or adamw")


#: Schedule names, and whether ``fit`` steps them per batch (True) or per epoch (False).
SCHEDULES = {"warmup-cosine": True, "cosine": False, "step": False, "none": False}


def make_schedule(config: TrainConfig, optimizer: optim.Optimizer, steps_per_epoch: int = 1):
    """The learning-rate schedule ``config`` asks for, or None.

    ``warmup-cosine`` (stepped per batch, :class:`optim.WarmupCosineLR`): linear warm-up from
    a tenth of ``config.lr`` over ``config.warmup_epochs`` epochs, then cosine to 0 at the end
    of ``config.epochs`` epochs of ``steps_per_epoch`` batches. Stepped per epoch: ``cosine``
    to 0 over ``config.epochs``, ``step``: a drop by ``config.gamma`` every
    ``config.step_size`` epochs. ``none``: a constant rate.
    """
    if config.schedule == "warmup-cosine":
        total = max(config.epochs * steps_per_epoch, 1)
        warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
        return optim.WarmupCosineLR(optimizer, total_steps=total, warmup_steps=warmup,
                                    start_factor=0.1)
    if config.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    if config.schedule == "step":
        return optim.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.schedule in ("none", None):
        return None
    raise ValueError(f"unknown schedule {config.schedule!r}; choose one of "
                     f"{', '.join(SCHEDULES)}")


def build_model(config: TrainConfig, source) -> nn.Module:
    """The model ``config`` names, shaped for ``source``: a :class:`RunMeta` or a data set."""
    meta = source if isinstance(source, RunMeta) else RunMeta.from_dataset(config, source)
    channels, height, _ = meta.input_shape
    return models.build(config.model, in_channels=channels, num_classes=len(meta.classes),
                        image_size=height, backend=config.backend, rng=config.seed)


def split_validation(dataset, val_size: int, seed: int):
    """Hold out ``val_size`` training images (a seeded random choice) for validation."""
    if val_size <= 0 or len(dataset) <= val_size:
        return dataset, None
    order = np.random.default_rng((seed, 0x5EED)).permutation(len(dataset))
    return dataset.subset(np.sort(order[val_size:])), dataset.subset(np.sort(order[:val_size]))


def predict_logits(model: nn.Module, images_or_loader, batch_size: int = 256) -> np.ndarray:
    """Logits ``(N, classes)`` for a loader (or a float32 array ``(N, C, H, W)``), eval mode."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(images_or_loader, np.ndarray):
            batches = (images_or_loader[i:i + batch_size]
                       for i in range(0, len(images_or_loader), batch_size))
            return np.concatenate([model(x) for x in batches])
        return np.concatenate([model(x) for x, _ in images_or_loader])
    finally:
        model.train(was_training)


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    confusion: np.ndarray        # (classes, classes): rows true, columns predicted
    predictions: np.ndarray      # (N,)
    probabilities: np.ndarray    # (N, classes)
    labels: np.ndarray           # (N,)

    def per_class_accuracy(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.zeros(len(totals)),
                         where=totals > 0)


def evaluate(model: nn.Module, dataset, batch_size: int = 256, transform=None) -> Evaluation:
    """Accuracy, mean loss and confusion matrix of ``model`` on ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, transform=transform)
    logits = predict_logits(model, loader)
    labels = dataset.labels
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predictions = logits.argmax(axis=1)
    classes = logits.shape[1]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    return Evaluation(accuracy=float((predictions == labels).mean()),
                      loss=float(-log_probs[np.arange(len(labels)), labels].mean()),
                      confusion=confusion, predictions=predictions,
                      probabilities=np.exp(log_probs), labels=labels)


class ClassificationTask:
    """Whole-image classification: cross-entropy loss, accuracy, a confusion matrix."""

    name = "classification"

    def loss(self, model: nn.Module):
        return nn.CrossEntropyLoss()

    def batch_correct(self, outputs: np.ndarray, targets: np.ndarray) -> float | None:
        """How many of a batch's images are right (for the running training accuracy)."""
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


def task_for(model_name: str):
    """The task that model ``model_name`` is trained for (see :func:`models.task_of`)."""
    if models.task_of(model_name) == "detection":
        from .detection.task import DetectionTask

        return DetectionTask()
    return ClassificationTask()


def _checkpoint_state(model, optimizer, schedule, epoch, batch, partial, history):
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    if schedule is not None:
        state["schedule.last_epoch"] = np.array(schedule.last_epoch)
    state["progress.epoch"] = np.array(epoch)
    state["progress.batch"] = np.array(batch)
    state["progress.partial"] = np.asarray(partial, dtype=np.float64)  # loss sum, correct, seen
    state["progress.history"] = np.array(json.dumps(history))
    return state


def _restore(state, model, optimizer, schedule):
    def section(prefix):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    model.load_state_dict(section("model."))
    optimizer.load_state_dict(section("optim."))
    if schedule is not None and "schedule.last_epoch" in state:
        schedule.load_state_dict({"last_epoch": int(state["schedule.last_epoch"])})
    return (int(state["progress.epoch"]), int(state["progress.batch"]),
            [float(v) for v in state["progress.partial"]],
            json.loads(str(state["progress.history"])))


def _load_data(config: TrainConfig):
    """Training (full and split), validation and test sets; refuses a run with no full batch."""
    train_full = load_dataset(config.dataset, "train", data_dir=config.data_dir,
                              limit=config.limit, seed=config.seed)
    test_set = load_dataset(config.dataset, "test", data_dir=config.data_dir,
                            limit=config.test_limit, seed=config.seed)
    train_set, val_set = split_validation(train_full, min(config.val_size, len(train_full) // 5),
                                          config.seed)
    if len(train_set) < config.batch_size:
        # The loader drops the last incomplete batch (every step sees a full batch), so such a
        # run would train on nothing and report 0 %.
        held = len(train_full) - len(train_set)
        raise TrainingError(
            f"the training set has {len(train_set)} images ({len(train_full)} loaded, {held} "
            f"held out for validation), fewer than one batch of {config.batch_size}: lower "
            "the batch size or use more images")
    return train_full, train_set, val_set, test_set


def read_config(out_dir, missing: str | None = None) -> TrainConfig:
    """The :class:`TrainConfig` stored in run folder ``out_dir``.

    Raises
    ------
    TrainingError
        With ``missing`` (or a default message) when there is no ``config.json``, or naming a
        damaged one.
    """
    out = Path(out_dir)
    missing = missing or f"{out} is not a run folder: no config.json"
    path = out / "config.json"
    if not path.exists():
        raise TrainingError(missing)
    try:
        return TrainConfig.from_json(path.read_text())
    except (ValueError, TypeError) as error:
        raise TrainingError(f"{path} is damaged ({error}); it can be rewritten from "
                            "TrainConfig().to_json() with the run's settings") from error


def _settle_config(config: TrainConfig, out: Path, resume: bool, epochs, data_dir):
    """The config a run goes on with, and the checkpoint state to resume from (or None)."""
    state = None
    if resume:
        config = read_config(out, f"nothing to resume: {out} has no config.json (not a run "
                                   "folder)")
        checkpoint_path = out / "checkpoint.npz"
        state = load(checkpoint_path) if checkpoint_path.exists() else None
        done = int(state["progress.epoch"]) if state is not None else 0
        if epochs is not None and epochs != config.epochs:
            if epochs < done:
                raise TrainingError(f"{out} has already trained {done} epochs; cannot shorten "
                                    f"it to {epochs}")
            config = dataclasses.replace(config, epochs=epochs)
        if data_dir:
            config = dataclasses.replace(config, data_dir=data_dir)
    elif epochs is not None or data_dir is not None:
        raise ValueError("fit: epochs= and data_dir= are for resume=True; set them in config")
    if config.data_dir:
        # An absolute path keeps working from any folder the run is used from later (not
        # resolved: a symbolic link the user named stays the link).
        config = dataclasses.replace(
            config, data_dir=os.path.abspath(Path(config.data_dir).expanduser()))
    return config, state


def _reconcile_history(out: Path, history: list, log) -> None:
    """Make ``history.json`` say what the checkpoint says (a kill may have come between the
    two writes, or after an older history was written)."""
    path = out / "history.json"
    try:
        on_disk = json.loads(path.read_text()) if path.exists() else None
    except ValueError:                       # cut short by a kill in an older version
        on_disk = "unreadable"
    if on_disk == history:
        return
    if on_disk is not None:
        had = f"{len(on_disk)} epoch(s)" if isinstance(on_disk, list) else on_disk
        log(f"history.json repaired from the checkpoint ({had} -> {len(history)} epoch(s))")
    write_json(path, history)


class _CompileTimer:
    """Notice Numba's one-off kernel compile by timing the first training steps.

    The first step of a process compiles (or loads from Numba's on-disk cache) every kernel it
    touches; when it takes noticeably longer than the steps after it, the difference is
    compile time, worth saying once so that a slow start is not mistaken for a slow engine.
    """

    STEPS = 4           # the first step and three to compare it with
    THRESHOLD_S = 1.0   # a warm cache loads in well under this

    def __init__(self, enabled: bool):
        self.times: list[float] = [] if enabled else None

    def record(self, seconds: float) -> str | None:
        """Add one step's duration; returns the message once, when there is one to give."""
        if self.times is None:
            return None
        self.times.append(seconds)
        return self.finish() if len(self.times) >= self.STEPS else None

    def finish(self) -> str | None:
        """Decide with the steps seen so far (an epoch may have fewer than ``STEPS``)."""
        if self.times is None or len(self.times) < 2:
            self.times = None
            return None
        first, typical = self.times[0], statistics.median(self.times[1:])
        self.times = None
        extra = first - typical
        if extra > self.THRESHOLD_S and first > 3 * typical:
            return f"compiled kernels in {extra:.1f} s (cached for later runs)"
        return None


_compile_timer_used = False   # one report per process: later runs in it have warm kernels


def fit(config: TrainConfig, out_dir, resume: bool = False, progress: bool = True,
        log=print, epochs: int | None = None, data_dir=None) -> dict:
    """Train ``config.model`` on ``config.dataset``; write the run folder ``out_dir``.

    Parameters
    ----------
    config : TrainConfig
        Ignored when resuming: the run folder's ``config.json`` is used.
    out_dir : path of the run folder (created once the data are loaded and the model built)
    resume : continue from ``out_dir/checkpoint.npz``; a folder with a config but no
        checkpoint yet (killed during the first epoch) starts from the beginning
    progress : show a tqdm progress bar
    log : where one-line messages go (``None`` for silence)
    epochs : int, optional
        Only with ``resume``: train up to this many epochs in all (extends a finished run;
        the stored config is updated). The cosine schedules are stretched to the new length
        from where they stand, so an extended run differs from one planned that long.
    data_dir : path, optional
        Only with ``resume``: where to look for the data set now (e.g. after the folder or
        the data moved); stored in the config.

    Returns
    -------
    dict with ``history`` (list of per-epoch dicts), ``seconds``, ``task`` (its name),
    ``evaluation`` (on the test split: :class:`Evaluation`, or for detection
    :class:`~minicnn.detection.task.DetectionEvaluation`), ``test_set``, and what
    ``result.json`` holds: ``test_accuracy`` and ``test_loss`` (classification) or
    ``test_map``, ``test_ap`` and ``test_loss`` (detection).

    Raises
    ------
    TrainingError
        When the loss becomes NaN/inf (the last good checkpoint is kept), there is nothing to
        resume, or the training set holds fewer images than one batch.
    ValueError
        For a setting that cannot work (see :meth:`TrainConfig.check`).
    """
    out = Path(out_dir)
    log = log or (lambda *_: None)
    checkpoint_path = out / "checkpoint.npz"
    config, state = _settle_config(config, out, resume, epochs, data_dir)
    config.check()
    if config.backend is not None:
        kernels.get(config.backend)

    task = task_for(config.model)
    train_full, train_set, val_set, test_set = _load_data(config)
    augment = config.augment if config.augment is not None else (
        task.name == "classification" and train_set.images.shape[1] == 3)
    train_transform = default_transform(train_full, augment=augment)
    eval_transform = default_transform(train_full, augment=False)
    meta = RunMeta.from_dataset(config, train_full)
    model = build_model(config, meta)
    optimizer = make_optimizer(config, model.parameters())
    steps_per_epoch = len(train_set) // config.batch_size      # the loader drops the rest
    schedule = make_schedule(config, optimizer, steps_per_epoch)
    per_step = schedule is not None and SCHEDULES[config.schedule]
    loss_fn = task.loss(model)

    # Everything that can refuse the run has run: only now does the folder appear.
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out):
        log(f"removed {stale.name}, left by an interrupted write")
    start_epoch, start_batch, partial, history = 0, 0, [0.0, 0.0, 0.0], []
    if state is not None:
        start_epoch, start_batch, partial, history = _restore(state, model, optimizer, schedule)
        log(f"resuming {out} at epoch {start_epoch + 1}, batch {start_batch}")
        _reconcile_history(out, history, log)
    elif resume:
        log(f"{out} has no checkpoint yet: starting it from the beginning")
    if not resume or epochs is not None or data_dir:
        write_text(out / "config.json", config.to_json() + "\n")
    write_json(out / "meta.json", meta.to_dict())

    def checkpoint(epoch, batch, partial_sums):
        save(_checkpoint_state(model, optimizer, schedule, epoch, batch, partial_sums, history),
             checkpoint_path)

    global _compile_timer_used
    compile_timer = _CompileTimer(
        enabled=not _compile_timer_used
        and (config.backend or kernels.get_default_backend()) == "numba")
    _compile_timer_used = True
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                            drop_last=True, transform=train_transform,
                            rng=np.random.default_rng((config.seed, epoch)))
        model.train()
        loss_sum, correct, seen = partial if epoch == start_epoch else (0.0, 0.0, 0.0)
        first = start_batch if epoch == start_epoch else 0
        bar = _progress(len(loader), first, f"epoch {epoch + 1}/{config.epochs}", progress)
        epoch_start, images, step_seconds = time.perf_counter(), 0, 0.0
        try:
            with _DeferredInterrupt() as interrupt:
                for batch_index, (x, y) in enumerate(loader.batches(start=first), start=first):
                    step_start = time.perf_counter()
                    logits = model(x)
                    if not np.all(np.isfinite(logits)):
                        raise TrainingError(
                            f"the loss became non-finite at epoch {epoch + 1}, batch "
                            f"{batch_index}: training diverged (lr={optimizer.lr:g} is probably "
                            f"too high); the last good checkpoint is kept in {checkpoint_path}")
                    loss = loss_fn(logits, y)
                    optimizer.zero_grad()
                    model.backward(loss_fn.backward(), need_input_grad=False)
                    optimizer.step()
                    if per_step:
                        schedule.step()
                    step_time = time.perf_counter() - step_start
                    step_seconds += step_time
                    message = compile_timer.record(step_time)
                    if message:
                        _log_beside(bar, log, message)
                    # Loop overhead (history's `seconds` / `step_seconds`), `minicnn train --model
                    # mnist-cnn --epochs 1 --limit 10000` (125 steps of 28 ms, progress bar on,
                    # 2-core shared machine): 1.005-1.0125x before the changes here (tqdm
                    # formatting every step, convert-then-normalise batches), 1.0046-1.0063x
                    # after. The default augmented runs: 1.02x (MNIST CNN, 19 ms steps) and
                    # 1.03x (LeNet-5, 8 ms steps); the batch itself takes ~60 us of that. The
                    # metrics reuse the step's logits; the bar's text is formatted only when
                    # tqdm is about to redraw (at most 4 times a second).
                    loss_sum += loss * len(y)
                    right = task.batch_correct(logits, y)
                    correct += right or 0.0
                    seen += len(y)
                    images += len(y)
                    if bar is not None:
                        now = bar._time()
                        if now - bar.last_print_t >= bar.mininterval:
                            rate = images / max(time.perf_counter() - epoch_start, 1e-9)
                            shown = {"loss": f"{loss_sum / seen:.4f}"}
                            if right is not None:
                                shown["acc"] = f"{correct / seen:.3f}"
                            bar.set_postfix(**shown, img_s=f"{rate:.0f}", refresh=False)
                        bar.update(1)
                    if interrupt.requested:
                        # Ctrl-C arrived during this batch: the step is complete, so the state
                        # is consistent; save it with the position of the next batch.
                        checkpoint(epoch, batch_index + 1, [loss_sum, correct, seen])
                        log(f"interrupted: progress saved to {checkpoint_path}; continue "
                            "with resume")
                        raise KeyboardInterrupt
        finally:
            if bar is not None:
                bar.close()
        message = compile_timer.finish()
        if message:
            log(message)

        seconds = time.perf_counter() - epoch_start
        # lr: the rate of the epoch (per-epoch schedules), or the one reached at its end (per
        # batch; the same whether or not the epoch was resumed).
        record = {"epoch": epoch + 1, "lr": optimizer.lr,
                  "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                  "images_per_second": images / max(seconds, 1e-9), "seconds": seconds,
                  "step_seconds": step_seconds}
        if task.name != "classification":
            del record["train_accuracy"]        # no per-image right or wrong to count
        if val_set is not None:
            val = task.evaluate(model, val_set, transform=eval_transform)
            record.update(task.validation_record(val))
        history.append(record)
        if schedule is not None and not per_step:
            schedule.step()
        # Checkpoint first: history.json is derived from it and repaired on resume.
        checkpoint(epoch + 1, 0, [0.0, 0.0, 0.0])
        write_json(out / "history.json", history)
        log(_epoch_line(record))
        start_batch = 0

    test = task.evaluate(model, test_set, transform=eval_transform)
    save(model, out / "model.npz")
    result = task.result(test)
    write_json(out / "result.json", result)
    log(task.summary(test, len(test_set)))
    return {"history": history, **result, "seconds": time.perf_counter() - started,
            "evaluation": test, "test_set": test_set, "task": task.name}


def _log_beside(bar, log, message: str) -> None:
    """``log(message)`` without tearing a progress bar that is on screen."""
    if bar is None:
        log(message)
        return
    with type(bar).external_write_mode():
        log(message)


class _DeferredInterrupt:
    """Hold Ctrl-C (SIGINT) until the current training step is finished.

    An interrupt in the middle of ``optimizer.step()`` would leave some parameters updated and
    others not; instead the handler only sets ``requested`` and the loop stops after the step.
    Outside the main thread signals cannot be caught, and Ctrl-C behaves as usual.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:      # a second Ctrl-C: the user insists, stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _epoch_line(record: dict) -> str:
    line = f"epoch {record['epoch']}: loss {record['train_loss']:.4f}"
    if "train_accuracy" in record:
        line += f", train acc {record['train_accuracy']:.4f}"
    if "val_accuracy" in record:
        line += f", val acc {record['val_accuracy']:.4f}"
    if "val_map" in record:
        line += f", val mAP@0.5 {record['val_map']:.4f}"
    return line + f", {record['images_per_second']:.0f} img/s"


def _progress(total: int, initial: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # mininterval: redraw at most 4 times a second (the loop formats the postfix only then).
    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=True,
                dynamic_ncols=True, mininterval=0.25)


def load_run(out_dir, data_dir=None):
    """The config, model (trained weights loaded) and :class:`RunMeta` of a finished run.

    Needs no data set: the input shape, normalisation and class names come from the run's
    ``meta.json``. A run folder written before ``meta.json`` existed falls back to reading
    them from the training data set (searched in ``data_dir``, the stored ``data_dir`` and
    the usual places).

    Raises
    ------
    TrainingError
        When ``out_dir`` is not a finished run folder, or an old one whose data set is gone.
    """
    out = Path(out_dir)
    model_path = out / "model.npz"
    config = read_config(out)
    if not model_path.exists():
        raise TrainingError(f"{out} has no trained model ({model_path.name}); train first or "
                            "resume the run")
    meta = _read_meta(out, config, data_dir)
    model = build_model(config, meta)
    load(model_path, model)
    return config, model, meta


def _read_meta(out: Path, config: TrainConfig, data_dir) -> RunMeta:
    path = out / "meta.json"
    if path.exists():
        return RunMeta.from_dict(json.loads(path.read_text()))
    try:
        train = load_dataset(config.dataset, "train", data_dir=data_dir or config.data_dir,
                             limit=1, seed=config.seed, download=False)
    except DataError as error:
        raise TrainingError(
            f"{out} was written before run folders stored meta.json, so the input shape and "
            f"class names must come from its training data set, which is not available: "
            f"{str(error).splitlines()[0]} (pass --data-dir, or resume the run once to add "
            "meta.json)") from error
    return RunMeta.from_dataset(config, train)
