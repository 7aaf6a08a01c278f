"""The training loop: ``fit`` a model from a config, and resume it where it stopped.

``fit`` writes a run folder (:mod:`minicnn.runfolder` describes its files and reads them back).
Every file is written atomically (:func:`minicnn.serialize.atomic_write`), so a kill at any
moment leaves each file either as it was or complete. The checkpoint is the source of truth:
resuming rewrites ``history.json`` from it and removes temporary files a kill left behind.
The folder is created only once the data set is loaded and the model built, so a run that is
refused (unknown model, missing data, a training set smaller than one batch) leaves nothing.

What is trained is a *task* (:mod:`minicnn.tasks`): the model's loss, its metric, how a data
set is evaluated. The loop asks the model's task for them and names none.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import kernels, nn, optim, tasks
# The configuration, the run folder and the classification evaluation were defined here
# once; they are re-exported so that ``from minicnn.train import ...`` keeps working.
from .config import SCHEDULES, TrainConfig, make_optimizer, make_schedule
from .data import DataLoader, default_transform, load_dataset
from .errors import RunFolderError, TrainingError
from .runfolder import RunMeta, build_model, load_run, read_config
from .serialize import load, remove_stale_temporaries, save, write_json, write_text
from .tasks.classification import Evaluation, evaluate, predict_logits


def split_validation(dataset, val_size: int, seed: int):
    """Hold out ``val_size`` training images (a seeded random choice) for validation."""
    if val_size <= 0 or len(dataset) <= val_size:
        return dataset, None
    order = np.random.default_rng((seed, 0x5EED)).permutation(len(dataset))
    return dataset.subset(np.sort(order[val_size:])), dataset.subset(np.sort(order[:val_size]))


def initial_checkpoint(config: TrainConfig, model: nn.Module) -> dict:
    """The checkpoint of a run before its first step: ``model``'s weights and a fresh
    optimiser (as :func:`fit` would build it from ``config``). Resuming from it trains *on*
    from those weights (``minicnn import`` writes one beside an imported network)."""
    optimizer = make_optimizer(config, model.parameters())
    # No schedule state: resume builds the schedule fresh, from its first step.
    return _checkpoint_state(model, optimizer, None, epoch=0, batch=0,
                             partial=[0.0, 0.0, 0.0], history=[])


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


@dataclass
class RunData:
    """A run's data sets: ``train_full`` (the whole training split, whose statistics
    normalise every split), ``train_set`` (what is trained on), ``val_set`` (held out, or
    None) and ``test_set``."""

    train_full: object
    train_set: object
    val_set: object
    test_set: object


def load_data(config: TrainConfig) -> RunData:
    """The data sets ``fit`` uses for ``config``, split exactly as it splits them; refuses a
    run whose training set holds fewer images than one batch (:class:`TrainingError`)."""
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
    return RunData(train_full, train_set, val_set, test_set)


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
        had = (f"{len(on_disk)} epoch(s)" if isinstance(on_disk, list) else on_disk
               if on_disk == "unreadable" else f"a JSON {type(on_disk).__name__}")
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


@dataclass
class _Run:
    """Everything one call of :func:`fit` works with, built once by :func:`_prepare`."""

    config: TrainConfig
    out: Path
    task: tasks.Task
    data: RunData
    train_transform: object
    eval_transform: object
    model: nn.Module
    optimizer: optim.Optimizer
    schedule: object
    per_step: bool            # the schedule steps after every batch (else after each epoch)
    loss_fn: object
    start_epoch: int
    start_batch: int
    partial: list             # the interrupted epoch's loss sum, right answers, images seen
    history: list

    def checkpoint(self, epoch: int, batch: int, partial_sums) -> None:
        save(_checkpoint_state(self.model, self.optimizer, self.schedule, epoch, batch,
                               partial_sums, self.history), self.out / "checkpoint.npz")


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
    ``evaluation`` (the task's evaluation of the test split: :class:`Evaluation` for
    classification), ``test_set``, and what ``result.json`` holds
    (:meth:`minicnn.tasks.Task.result`: ``test_accuracy`` and ``test_loss`` for
    classification, ``test_map``, ``test_ap`` and ``test_loss`` for detection).

    Raises
    ------
    TrainingError
        When the loss becomes NaN/inf (the last good checkpoint is kept), there is nothing to
        resume, or the training set holds fewer images than one batch.
    ValueError
        For a setting that cannot work (see :meth:`TrainConfig.check`).
    """
    log = log or (lambda *_: None)
    run = _prepare(config, Path(out_dir), resume, epochs, data_dir, log)
    global _compile_timer_used
    compile_timer = _CompileTimer(
        enabled=not _compile_timer_used
        and (run.config.backend or kernels.get_default_backend()) == "numba")
    _compile_timer_used = True
    started = time.perf_counter()
    for epoch in range(run.start_epoch, run.config.epochs):
        record = _train_epoch(run, epoch, progress, log, compile_timer)
        if run.data.val_set is not None:
            val = run.task.evaluate(run.model, run.data.val_set, transform=run.eval_transform)
            record.update(run.task.validation_record(val))
        run.history.append(record)
        if run.schedule is not None and not run.per_step:
            run.schedule.step()
        # Checkpoint first: history.json is derived from it and repaired on resume.
        run.checkpoint(epoch + 1, 0, [0.0, 0.0, 0.0])
        write_json(run.out / "history.json", run.history)
        log(_epoch_line(record))
        run.start_batch = 0

    test_set = run.data.test_set
    test = run.task.evaluate(run.model, test_set, transform=run.eval_transform)
    save(run.model, run.out / "model.npz")
    result = run.task.result(test)
    write_json(run.out / "result.json", result)
    log(run.task.summary(test, len(test_set)))
    return {"history": run.history, **result, "seconds": time.perf_counter() - started,
            "evaluation": test, "test_set": test_set, "task": run.task.name}


def _prepare(config: TrainConfig, out: Path, resume: bool, epochs, data_dir, log) -> _Run:
    """Settle the config, load the data, build the model and optimiser, restore a
    checkpoint; only then create the run folder and write its config and meta."""
    config, state = _settle_config(config, out, resume, epochs, data_dir)
    config.check()
    if config.backend is not None:
        kernels.get(config.backend)

    task = tasks.for_model(config.model)
    data = load_data(config)
    augment = (config.augment if config.augment is not None
               else task.default_augment(data.train_set.images))
    train_transform = default_transform(data.train_full, augment=augment)
    eval_transform = default_transform(data.train_full, augment=False)
    meta = RunMeta.from_dataset(config, data.train_full)
    model = build_model(config, meta)
    optimizer = make_optimizer(config, model.parameters())
    steps_per_epoch = len(data.train_set) // config.batch_size      # the loader drops the rest
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
    return _Run(config, out, task, data, train_transform, eval_transform, model, optimizer,
                schedule, per_step, loss_fn, start_epoch, start_batch, partial, history)


def _train_epoch(run: _Run, epoch: int, progress: bool, log, compile_timer) -> dict:
    """One epoch of training steps (from ``run.start_batch`` in a resumed epoch); returns
    the epoch's history record before validation."""
    config, model, optimizer, loss_fn = run.config, run.model, run.optimizer, run.loss_fn
    loader = DataLoader(run.data.train_set, batch_size=config.batch_size, shuffle=True,
                        drop_last=True, transform=run.train_transform,
                        rng=np.random.default_rng((config.seed, epoch)))
    model.train()
    loss_sum, correct, seen = run.partial if epoch == run.start_epoch else (0.0, 0.0, 0.0)
    first = run.start_batch if epoch == run.start_epoch else 0
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
                        f"too high); the last good checkpoint is kept in "
                        f"{run.out / 'checkpoint.npz'}")
                loss = loss_fn(logits, y)
                optimizer.zero_grad()
                model.backward(loss_fn.backward(), need_input_grad=False)
                optimizer.step()
                if run.per_step:
                    run.schedule.step()
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
                right = run.task.batch_correct(logits, y)
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
                    run.checkpoint(epoch, batch_index + 1, [loss_sum, correct, seen])
                    log(f"interrupted: progress saved to {run.out / 'checkpoint.npz'}; "
                        "continue with resume")
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
    if not run.task.counts_correct:
        del record["train_accuracy"]        # no per-image right or wrong to count
    return record


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
