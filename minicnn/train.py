"""The training loop: ``fit`` a model from a config, ``evaluate`` it, resume where it stopped.

A run lives in one folder::

    config.json       what was asked for (enough to rebuild the model)
    checkpoint.npz    model, optimiser and progress; written atomically after every epoch
                      (and on Ctrl-C), so ``resume=True`` continues exactly where it stopped
    model.npz         the trained model's state dict
    history.json      per-epoch loss, accuracy, validation accuracy, learning rate, images/s

Exact resume works because nothing random is carried in hidden state: the weights come from
``rng=seed``, and epoch ``e`` shuffles (and augments) with ``default_rng((seed, e))``.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import kernels, models, nn, optim
from .data import DataLoader, default_transform, load_dataset
from .serialize import load, save


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, nothing to resume, ...); the message says why."""


@dataclass
class TrainConfig:
    """Everything that defines a run. Saved as ``config.json`` in the run folder."""

    dataset: str = "mnist"
    model: str = "lenet5"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"            # sgd | adam | adamw
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"          # cosine | step | none
    seed: int = 0
    backend: str | None = None        # kernel backend; None = the fastest available
    augment: bool | None = None       # None: crop+flip for 3-channel data sets only
    limit: int | None = None          # use only the first `limit` training images
    test_limit: int | None = None
    val_size: int = 5000              # held out from the training split for validation
    data_dir: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        values = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)


def make_optimizer(config: TrainConfig, parameters) -> optim.Optimizer:
    name = config.optimizer.lower()
    if name == "sgd":
        return optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    if name == "adam":
        return optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay or 1e-2)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose sgd, adam or adamw")


def make_schedule(config: TrainConfig, optimizer: optim.Optimizer):
    if config.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    if config.schedule == "step":
        return optim.StepLR(optimizer, step_size=max(config.epochs // 3, 1), gamma=0.1)
    if config.schedule in ("none", None):
        return None
    raise ValueError(f"unknown schedule {config.schedule!r}; choose cosine, step or none")


def build_model(config: TrainConfig, dataset) -> nn.Module:
    """The model ``config`` names, shaped for ``dataset``'s images and classes."""
    channels, height, _ = dataset.images.shape[1:]
    return models.build(config.model, in_channels=channels, num_classes=len(dataset.classes),
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


def fit(config: TrainConfig, out_dir, resume: bool = False, progress: bool = True,
        log=print) -> dict:
    """Train ``config.model`` on ``config.dataset``; write the run folder ``out_dir``.

    Parameters
    ----------
    config : TrainConfig
    out_dir : path of the run folder (created)
    resume : continue from ``out_dir/checkpoint.npz`` (the config is read from the folder)
    progress : show a tqdm progress bar
    log : where one-line epoch summaries go (``None`` for silence)

    Returns
    -------
    dict with ``history`` (list of per-epoch dicts), ``test_accuracy`` and ``seconds``.

    Raises
    ------
    TrainingError
        When the loss becomes NaN/inf (the last good checkpoint is kept) or there is nothing
        to resume.
    """
    out = Path(out_dir)
    checkpoint_path = out / "checkpoint.npz"
    if resume:
        if not checkpoint_path.exists():
            raise TrainingError(f"nothing to resume: {checkpoint_path} does not exist")
        config = TrainConfig.from_json((out / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if config.backend is not None:
        kernels.get(config.backend)
    log = log or (lambda *_: None)

    train_full = load_dataset(config.dataset, "train", data_dir=config.data_dir,
                              limit=config.limit, seed=config.seed)
    test_set = load_dataset(config.dataset, "test", data_dir=config.data_dir,
                            limit=config.test_limit, seed=config.seed)
    train_set, val_set = split_validation(train_full, min(config.val_size, len(train_full) // 5),
                                          config.seed)
    augment = config.augment if config.augment is not None else train_set.images.shape[1] == 3
    train_transform = default_transform(train_full, augment=augment)
    eval_transform = default_transform(train_full, augment=False)

    model = build_model(config, train_full)
    optimizer = make_optimizer(config, model.parameters())
    schedule = make_schedule(config, optimizer)
    loss_fn = nn.CrossEntropyLoss()
    start_epoch, start_batch, partial, history = 0, 0, [0.0, 0.0, 0.0], []
    if resume:
        start_epoch, start_batch, partial, history = _restore(
            load(checkpoint_path), model, optimizer, schedule)
        log(f"resuming {out} at epoch {start_epoch + 1}, batch {start_batch}")
    else:
        (out / "config.json").write_text(config.to_json())

    def checkpoint(epoch, batch, partial_sums):
        save(_checkpoint_state(model, optimizer, schedule, epoch, batch, partial_sums, history),
             checkpoint_path)

    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                            drop_last=True, transform=train_transform,
                            rng=np.random.default_rng((config.seed, epoch)))
        model.train()
        loss_sum, correct, seen = partial if epoch == start_epoch else (0.0, 0.0, 0.0)
        first = start_batch if epoch == start_epoch else 0
        bar = _progress(len(loader), first, f"epoch {epoch + 1}/{config.epochs}", progress)
        epoch_start, images = time.perf_counter(), 0
        try:
            with _DeferredInterrupt() as interrupt:
                for batch_index, (x, y) in enumerate(loader.batches(start=first), start=first):
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
                    loss_sum += loss * len(y)
                    correct += float((logits.argmax(axis=1) == y).sum())
                    seen += len(y)
                    images += len(y)
                    if bar is not None:
                        rate = images / max(time.perf_counter() - epoch_start, 1e-9)
                        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                        img_s=f"{rate:.0f}", refresh=False)
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

        seconds = time.perf_counter() - epoch_start
        record = {"epoch": epoch + 1, "lr": optimizer.lr,
                  "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                  "images_per_second": images / max(seconds, 1e-9), "seconds": seconds}
        if val_set is not None:
            val = evaluate(model, val_set, transform=eval_transform)
            record.update(val_loss=val.loss, val_accuracy=val.accuracy)
        history.append(record)
        if schedule is not None:
            schedule.step()
        checkpoint(epoch + 1, 0, [0.0, 0.0, 0.0])
        (out / "history.json").write_text(json.dumps(history, indent=2))
        log(_epoch_line(record))
        start_batch = 0

    test = evaluate(model, test_set, transform=eval_transform)
    save(model, out / "model.npz")
    summary = {"history": history, "test_accuracy": test.accuracy, "test_loss": test.loss,
               "seconds": time.perf_counter() - started}
    (out / "result.json").write_text(json.dumps(
        {"test_accuracy": test.accuracy, "test_loss": test.loss}, indent=2))
    log(f"test accuracy {test.accuracy:.4f} ({len(test_set)} images)")
    return summary


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
    line = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, "
            f"train acc {record['train_accuracy']:.4f}")
    if "val_accuracy" in record:
        line += f", val acc {record['val_accuracy']:.4f}"
    return line + f", {record['images_per_second']:.0f} img/s"


def _progress(total: int, initial: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=True,
                dynamic_ncols=True)


def load_run(out_dir):
    """The config, model (trained weights loaded) and test split of a finished run."""
    out = Path(out_dir)
    config_path, model_path = out / "config.json", out / "model.npz"
    if not config_path.exists():
        raise TrainingError(f"{out} is not a run folder: no config.json")
    if not model_path.exists():
        raise TrainingError(f"{out} has no trained model ({model_path.name}); train first or "
                            "resume the run")
    config = TrainConfig.from_json(config_path.read_text())
    train_meta = load_dataset(config.dataset, "train", data_dir=config.data_dir, limit=1,
                              seed=config.seed)
    model = build_model(config, train_meta)
    load(model_path, model)
    return config, model, train_meta
