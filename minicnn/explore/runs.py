"""Open a run folder for the explorer: the run's task picks the explorer that shows it."""

from __future__ import annotations

from pathlib import Path


def open_run(run, data_dir=None):
    """The explorer for a run folder written by ``minicnn train``.

    Loads it with :func:`minicnn.runfolder.load_run` (which refuses a damaged folder in one
    line) and asks the run's task for its view (:meth:`minicnn.tasks.Task.explorer`): an
    :class:`~minicnn.explore.analysis.Explorer` for a classifier, a
    :class:`~minicnn.explore.detection.DetectionExplorer` for a detector.
    """
    from .. import tasks
    from ..runfolder import load_run

    config, model, meta = load_run(run, data_dir=data_dir)
    return tasks.for_model(config.model).explorer(model, meta, name=Path(run).resolve().name)
