"""What every task supplies: the interface :func:`minicnn.train.fit`, the command line and the
explorer use, so that none of them names a task.

A *task* is what a model is trained for: classification (one label per image) or detection
(every object in a scene). It owns what differs between them: the loss, the metric and how a
whole data set is evaluated, the run's recipe defaults, the figures written into a run folder,
what ``minicnn evaluate`` prints, the command that uses a trained run on image files
(``predict`` or ``detect``) and the explorer's view of one image.

Adding a task (segmentation, say) means a module in this package with a subclass of
:class:`Task`, its name in :data:`minicnn.tasks.TASKS`, models that say they are for it
(:func:`minicnn.models.task_of`) and data sets that say so (``DatasetSpec.task``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


def each_image(paths, read, report, as_json: bool, failed: str) -> int:
    """The loop over image files that ``predict`` and ``detect`` share.

    ``read(path)`` prepares one file and runs the network on it (raising ``DataError`` or
    ``OSError`` for a file it cannot use: said on stderr, counted, skipped); ``report(path,
    result)`` prints the file's text line (unless ``as_json``) and returns its JSON entry.
    With ``as_json`` the entries are printed as one JSON list at the end. Returns the exit
    code 0, or raises :class:`~minicnn.argtypes.UserError` ("N of M image(s) {failed}") when
    any file was skipped.
    """
    import json
    import sys

    from ..argtypes import UserError
    from ..data import DataError

    results, failures = [], 0
    for path in paths:
        try:
            result = read(path)
        except (DataError, OSError) as error:
            print(f"{path}: cannot use this image: {error}", file=sys.stderr)
            failures += 1
            continue
        results.append(report(path, result))
    if as_json:
        print(json.dumps(results, indent=2))
    if failures:
        raise UserError(f"{failures} of {len(paths)} image(s) {failed}")
    return 0


class Task(ABC):
    """One kind of problem a model is trained for.

    Attributes
    ----------
    name : str
        As models and data sets name their task (``"classification"``, ``"detection"``).
    use_command : str
        The ``minicnn`` command that uses a trained run of this task on image files.
    recipe : dict
        ``minicnn train``'s defaults where they differ from :data:`minicnn.config.BASE_RECIPE`.
    recipe_lr : dict
        Default learning rate per optimiser, where it differs from
        :data:`minicnn.config.BASE_LR`.
    counts_correct : bool
        Whether :meth:`batch_correct` counts right answers (a training accuracy is reported).
    """

    name: str
    use_command: str
    recipe: dict = {}
    recipe_lr: dict = {}
    counts_correct: bool = True

    # -- training ----------------------------------------------------------------------------
    def check_config(self, config) -> None:
        """Raise ``ValueError`` for a setting this task cannot train with (default: none)."""

    def default_augment(self, images: np.ndarray) -> bool:
        """Whether to augment when the config leaves it open (``augment=None``): crops and
        mirroring for colour images ``(N, 3, H, W)``, none otherwise."""
        return images.shape[1] == 3

    @abstractmethod
    def loss(self, model):
        """The loss module for ``model`` (``forward(outputs, targets)``, ``backward()``)."""

    @abstractmethod
    def batch_correct(self, outputs: np.ndarray, targets) -> float | None:
        """How many of a batch's images are right, for the running training accuracy, or
        ``None`` where the task has no per-image right or wrong."""

    @abstractmethod
    def evaluate(self, model, dataset, transform=None, batch_size: int = 256):
        """The task's evaluation of ``model`` on ``dataset`` (eval mode)."""

    @abstractmethod
    def validation_record(self, evaluation) -> dict:
        """What an epoch's history record gains from a validation evaluation."""

    @abstractmethod
    def result(self, evaluation) -> dict:
        """What ``result.json`` holds for the test evaluation (JSON types only)."""

    @abstractmethod
    def summary(self, evaluation, count: int) -> str:
        """One line: the test result over ``count`` images."""

    # -- the run folder and the command line ---------------------------------------------------
    @abstractmethod
    def write_figures(self, out: Path, history: list, evaluation, test_set) -> list[Path]:
        """Draw the run's figures into folder ``out``; returns the files written."""

    @abstractmethod
    def finished_line(self, out: Path, result: dict, seconds: float) -> str:
        """What ``minicnn train`` prints last: the run folder and its headline figure."""

    @abstractmethod
    def report(self, config, evaluation, test_set, meta) -> None:
        """Print ``minicnn evaluate``'s report: the headline figure and a per-class table."""

    @abstractmethod
    def use(self, args, model, meta) -> int:
        """Run :attr:`use_command` (``args``: its parsed arguments) with a loaded run;
        returns the exit code."""

    @abstractmethod
    def explorer(self, model, meta, name: str):
        """The :class:`minicnn.explore.Explorer` that shows this task's runs."""
