"""What a training run is asked to do: :class:`TrainConfig`, and the recipe that fills it.

A run is defined by one :class:`TrainConfig` (saved as ``config.json`` in the run folder).
Its field defaults are the plain Python API's (``TrainConfig(model="mnist-cnn")`` changes only
the model). The *recipe* is what ``minicnn train`` uses for whatever the user does not type:
the base recipe here, then the task's own changes (a detector trains with Adam at another
learning rate, :attr:`minicnn.tasks.Task.recipe`), then the optimiser's learning rate and
weight decay. :func:`recipe_config` is the one place that composes them; the command line and
``minicnn bench`` both build their configurations through it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from . import models, optim

#: Schedule names, and whether ``fit`` steps them per batch (True) or per epoch (False).
SCHEDULES = {"warmup-cosine": True, "cosine": False, "step": False, "none": False}

#: The command's recipe for a classifier (each task may change some of it: see
#: :attr:`minicnn.tasks.Task.recipe`). Measured: see the README's "Results".
BASE_RECIPE = dict(dataset="mnist", model="lenet5", epochs=5, batch_size=64, optimizer="sgd",
                   momentum=0.9, nesterov=True, schedule="warmup-cosine", warmup_epochs=0.2,
                   step_size=2, gamma=0.1, seed=0, val_size=0, augment=True)
#: Learning rate and weight decay by optimiser, where the user gives none.
BASE_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
BASE_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 1e-2}
#: ``--quick``: a fast look at a run.
QUICK = dict(epochs=1, limit=5000, test_limit=1000, val_size=500)


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
    augment: bool | None = None       # None: the task decides (crop+flip for colour images)
    limit: int | None = None          # use only the first `limit` training images
    test_limit: int | None = None
    val_size: int = 0                 # held out from the training split for validation
    data_dir: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Read a config; one written before a field existed gets the policy it ran with.

        Only JSON syntax is checked here; :func:`minicnn.runfolder.read_config` validates a
        run folder's file field by field."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from ``config.json``'s object (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
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
        """The data set must be of the model's task, and the task may refuse settings."""
        from . import tasks
        from .data import get_spec
        from .data.errors import UnknownDatasetError

        task = tasks.for_model(self.model)
        try:
            spec = get_spec(self.dataset)
        except UnknownDatasetError:
            return          # refused with the list of names when the data set is loaded
        if spec.task != task.name:
            fitting = [name for name in models.MODELS if models.task_of(name) == spec.task]
            raise ValueError(f"model {self.model!r} is for {task.name} but data set "
                             f"{spec.name!r} is for {spec.task}; use one of these models with "
                             f"it: {', '.join(fitting)}")
        task.check_config(self)


def recipe_config(model: str | None = None, dataset: str | None = None, quick: bool = False,
                  **settings) -> TrainConfig:
    """The :class:`TrainConfig` that ``minicnn train`` runs: ``settings`` over the recipe.

    Parameters
    ----------
    model, dataset : str, optional
        Default: the base recipe's (LeNet-5 on MNIST).
    quick : bool
        ``--quick``: :data:`QUICK`'s epochs, image limits and validation size, where
        ``settings`` do not set them.
    **settings
        Any :class:`TrainConfig` field; ``None`` means "not given" (as an unset command-line
        option), so the recipe's value is used.

    The recipe is :data:`BASE_RECIPE` with the model's task's changes
    (:attr:`minicnn.tasks.Task.recipe`); where no learning rate or weight decay is given, the
    optimiser's (:data:`BASE_LR` and :data:`BASE_WEIGHT_DECAY`, or the task's own); Nesterov
    momentum where the optimiser is SGD with momentum, unless ``nesterov`` says otherwise.
    """
    from . import tasks

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"recipe_config: unknown setting(s) {', '.join(unknown)}")
    given = {k: v for k, v in settings.items() if v is not None}
    if model is not None:
        given["model"] = model
    if dataset is not None:
        given["dataset"] = dataset
    task = tasks.for_model(given.get("model", BASE_RECIPE["model"]))
    recipe = {**BASE_RECIPE, **task.recipe}
    values = {key: given.get(key, default) for key, default in recipe.items()}
    if quick:
        values["epochs"] = given.get("epochs", QUICK["epochs"])
        values["limit"] = given.get("limit", QUICK["limit"])
        values["test_limit"] = given.get("test_limit", QUICK["test_limit"])
        values["val_size"] = given.get("val_size", QUICK["val_size"])
    optimizer = values["optimizer"]
    if "nesterov" not in given:    # the default applies where Nesterov momentum exists
        values["nesterov"] = recipe["nesterov"] and optimizer == "sgd" and values["momentum"] > 0
    values["lr"] = given.get("lr", {**BASE_LR, **task.recipe_lr}[optimizer])
    values["weight_decay"] = given.get("weight_decay", BASE_WEIGHT_DECAY[optimizer])
    for key, value in given.items():
        values.setdefault(key, value)
    return TrainConfig(**values)


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
