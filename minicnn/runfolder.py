"""A run folder, read through one validated loader.

``minicnn train`` writes a run into one folder::

    config.json       what was asked for (:class:`~minicnn.config.TrainConfig`)
    meta.json         what inference needs without the data set (:class:`RunMeta`)
    checkpoint.npz    model, optimiser and progress, after every epoch (and on Ctrl-C)
    model.npz         the trained model's state dict
    history.json      one record per epoch: loss, accuracy or mAP, learning rate, timing
    result.json       the test result (:meth:`minicnn.tasks.Task.result`)

Every command that opens a run (``evaluate``, ``predict``, ``detect``, ``explore``,
``train --resume``) reads these files through this module, which checks each one field by
field: a hand-edited or damaged file is refused with one line naming the file and the field
(:class:`RunFolderError`), never a traceback from deep inside. ``.npz`` files are checked by
:func:`minicnn.serialize.load` (no pickles, shapes and dtypes against the model).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .errors import RunFolderError, TrainingError

# -- what each file may hold ---------------------------------------------------------------
# (kind, may be null). Kinds: "text", "whole" (an int, not a bool), "number" (int or float,
# finite), "measure" (int or float, NaN allowed), "flag" (a bool).
_CONFIG_FIELDS = {
    "dataset": ("text", False), "model": ("text", False), "epochs": ("whole", False),
    "batch_size": ("whole", False), "lr": ("number", False), "optimizer": ("text", False),
    "momentum": ("number", False), "nesterov": ("flag", False),
    "weight_decay": ("number", False), "schedule": ("text", True),
    "warmup_epochs": ("number", False), "step_size": ("whole", False),
    "gamma": ("number", False), "seed": ("whole", False), "backend": ("text", True),
    "augment": ("flag", True), "limit": ("whole", True), "test_limit": ("whole", True),
    "val_size": ("whole", False), "data_dir": ("text", True),
}
#: Fields every version of ``minicnn train`` wrote; the others have fallbacks for older runs
#: (:meth:`TrainConfig.from_dict`).
_CONFIG_REQUIRED = ("dataset", "model", "epochs", "batch_size", "lr", "optimizer", "seed")

# A measurement may be NaN (the mAP of scenes without objects), so "measure", not "number".
_HISTORY_FIELDS = {
    "epoch": "whole", "lr": "measure", "train_loss": "measure", "train_accuracy": "measure",
    "val_loss": "measure", "val_accuracy": "measure", "val_map": "measure",
    "images_per_second": "measure", "seconds": "measure", "step_seconds": "measure",
}

_KIND_WORDS = {"text": "a string", "whole": "a whole number", "number": "a finite number",
               "measure": "a number", "flag": "true or false"}


def _is_kind(value, kind: str) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "flag":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "whole":
        return isinstance(value, int)
    if kind == "measure":
        return isinstance(value, (int, float))
    return isinstance(value, (int, float)) and math.isfinite(value)


def _describe(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_field(path: Path, name: str, value, kind: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not _is_kind(value, kind):
        raise RunFolderError(f"{path} is damaged: field {name!r} must be {_KIND_WORDS[kind]}"
                             f"{' or null' if nullable else ''}, got {_describe(value)}")


def _read_json(path: Path, what: str):
    """The parsed contents of ``path`` (one line naming it when unreadable or not JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunFolderError(f"{path} is damaged: {what} is not UTF-8 text") from None
    except OSError as error:
        raise RunFolderError(f"{path} is damaged: cannot read {what}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise RunFolderError(f"{path} is damaged: {what} is not valid JSON ({error})") from None


def _read_object(path: Path, what: str) -> dict:
    values = _read_json(path, what)
    if not isinstance(values, dict):
        raise RunFolderError(f"{path} is damaged: {what} must hold a JSON object, got "
                             f"{type(values).__name__ if values is not None else 'null'}")
    return values


# -- config.json -----------------------------------------------------------------------------
def read_config(out_dir, missing: str | None = None) -> TrainConfig:
    """The :class:`TrainConfig` stored in run folder ``out_dir``, checked field by field.

    Raises
    ------
    TrainingError
        With ``missing`` (or a default message) when there is no ``config.json``.
    RunFolderError
        Naming the file and the field when it is not a JSON object, a field has the wrong
        type, a required field is missing, or a value cannot work (:meth:`TrainConfig.check`).
    """
    out = Path(out_dir)
    path = out / "config.json"
    if not path.exists():
        raise TrainingError(missing or f"{out} is not a run folder: no config.json")
    values = _read_object(path, "the run's settings")
    for name in _CONFIG_REQUIRED:
        if name not in values:
            raise RunFolderError(f"{path} is damaged: field {name!r} is missing")
    for name, (kind, nullable) in _CONFIG_FIELDS.items():
        if name in values:
            _check_field(path, name, values[name], kind, nullable)
    config = TrainConfig.from_dict(values)
    try:
        config.check()
    except ValueError as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None
    return config


# -- meta.json -------------------------------------------------------------------------------
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


def read_meta(path, config: TrainConfig | None = None) -> RunMeta:
    """The :class:`RunMeta` in ``meta.json`` at ``path``, checked field by field (and against
    the run's ``config`` when given: the same model and data set)."""
    path = Path(path)
    values = _read_object(path, "the run's input description")
    for name in ("input_shape", "mean", "std", "classes", "model", "dataset"):
        if name not in values:
            raise RunFolderError(f"{path} is damaged: field {name!r} is missing")
    shape = values["input_shape"]
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(_is_kind(d, "whole") and d >= 1 for d in shape)):
        raise RunFolderError(f"{path} is damaged: field 'input_shape' must be [channels, height, width] "
                             f"of whole numbers >= 1, got {_describe(shape)}")
    for name in ("mean", "std"):
        value = values[name]
        if (not isinstance(value, list) or len(value) != shape[0]
                or not all(_is_kind(v, "number") for v in value)):
            raise RunFolderError(f"{path} is damaged: field {name!r} must be a list of {shape[0]} "
                                 f"number(s), one per channel, got {_describe(value)}")
    if not all(v > 0 for v in values["std"]):
        raise RunFolderError(f"{path} is damaged: field 'std' must be positive, got "
                             f"{_describe(values['std'])}")
    classes = values["classes"]
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, str) for c in classes)):
        raise RunFolderError(f"{path} is damaged: field 'classes' must be a non-empty list of strings, "
                             f"got {_describe(classes)}")
    for name in ("model", "dataset"):
        _check_field(path, name, values[name], "text")
    if "format" in values:
        _check_field(path, "format", values["format"], "whole")
    if config is not None:
        for name in ("model", "dataset"):
            if values[name] != getattr(config, name):
                raise RunFolderError(f"{path} is damaged: field {name!r} is {values[name]!r} but the "
                                     f"run's config.json says {getattr(config, name)!r}")
    return RunMeta.from_dict({k: values[k] for k in ("input_shape", "mean", "std", "classes",
                                                     "model", "dataset")})


# -- history.json ----------------------------------------------------------------------------
def read_history(out_dir) -> list[dict]:
    """The per-epoch records in ``history.json`` (``[]`` when the run has none yet), checked:
    a list of objects, each with a whole ``epoch``, the known fields numbers."""
    path = Path(out_dir) / "history.json"
    if not path.exists():
        return []
    records = _read_json(path, "the run's history")
    if not isinstance(records, list):
        raise RunFolderError(f"{path} is damaged: the run's history must be a JSON list of per-epoch "
                             f"objects, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RunFolderError(f"{path} is damaged: entry {index} must be an object, got "
                                 f"{_describe(record)}")
        if "epoch" not in record:
            raise RunFolderError(f"{path} is damaged: entry {index}: field 'epoch' is missing")
        for name, kind in _HISTORY_FIELDS.items():
            if name in record and not _is_kind(record[name], kind):
                raise RunFolderError(f"{path} is damaged: entry {index}: field {name!r} must be "
                                     f"{_KIND_WORDS[kind]}, got {_describe(record[name])}")
    return records


# -- the whole run ---------------------------------------------------------------------------
def build_model(config: TrainConfig, source):
    """The model ``config`` names, shaped for ``source``: a :class:`RunMeta` or a data set."""
    from . import models

    meta = source if isinstance(source, RunMeta) else RunMeta.from_dataset(config, source)
    channels, height, _ = meta.input_shape
    return models.build(config.model, in_channels=channels, num_classes=len(meta.classes),
                        image_size=height, backend=config.backend, rng=config.seed)


def load_run(out_dir, data_dir=None):
    """The config, model (trained weights loaded) and :class:`RunMeta` of a finished run.

    Needs no data set: the input shape, normalisation and class names come from the run's
    ``meta.json``. A run folder written before ``meta.json`` existed falls back to reading
    them from the training data set (searched in ``data_dir``, the stored ``data_dir`` and
    the usual places).

    Raises
    ------
    TrainingError
        When ``out_dir`` is not a finished run folder, or an old one whose data set is gone;
        :class:`RunFolderError` (a TrainingError) naming the file and field that is damaged.
    """
    from .serialize import load

    out = Path(out_dir)
    model_path = out / "model.npz"
    config = read_config(out)
    if not model_path.exists():
        raise TrainingError(f"{out} has no trained model ({model_path.name}); train first or "
                            "resume the run")
    meta = _meta_of(out, config, data_dir)
    model = build_model(config, meta)
    load(model_path, model)
    return config, model, meta


def _meta_of(out: Path, config: TrainConfig, data_dir) -> RunMeta:
    from .data import DataError, load_dataset

    path = out / "meta.json"
    if path.exists():
        return read_meta(path, config)
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
