"""Errors that more than one part of minicnn raises, in a module that depends on nothing."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, nothing to resume, ...); the message says why."""


class RunFolderError(TrainingError):
    """A run folder's file is damaged or hand-edited into something unusable; the message
    names the file and the field."""
