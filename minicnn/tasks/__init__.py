"""The tasks a model can be trained for, each in one place, and the registry that finds them.

- :mod:`.base`: :class:`Task`, what every task supplies (read this first)
- :mod:`.classification`: one label per image (``minicnn predict``)
- :mod:`.detection`: every object in a scene (``minicnn detect``)

:func:`minicnn.train.fit`, the command line and the explorer ask the registry for the task of
a model (:func:`for_model`) and call its methods; none of them names a task.
"""

from __future__ import annotations

from .. import models
from .base import Task
from .classification import ClassificationTask
from .detection import DetectionTask

#: Every task, by name (the name models and data sets give: ``DatasetSpec.task``,
#: :func:`minicnn.models.task_of`).
TASKS: dict[str, Task] = {task.name: task for task in (ClassificationTask(), DetectionTask())}


def get(name: str) -> Task:
    """The task called ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def for_model(model_name: str) -> Task:
    """The task model ``model_name`` is trained for (:func:`minicnn.models.task_of`)."""
    return get(models.task_of(model_name))


def for_command(config, command: str) -> Task:
    """The task of a run, refusing one that ``minicnn COMMAND`` cannot use.

    Raises
    ------
    minicnn.argtypes.UserError
        When the run is of a task whose trained models another command uses (``predict`` on a
        detection run), naming that command.
    """
    from ..argtypes import UserError

    task = for_model(config.model)
    if task.use_command != command:
        wanted = next(t.name for t in TASKS.values() if t.use_command == command)
        raise UserError(f"this is a {task.name} run ({config.model} on {config.dataset}); "
                        f"`minicnn {command}` needs a {wanted} run: use "
                        f"`minicnn {task.use_command}`")
    return task


__all__ = ["ClassificationTask", "DetectionTask", "TASKS", "Task", "for_command", "for_model",
           "get"]
