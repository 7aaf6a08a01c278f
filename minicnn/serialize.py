"""Saving and loading state dicts as ``.npz`` -- plain arrays, never pickles.

``save`` writes to a temporary file beside the target and renames it into place, so a crash
mid-write can never leave a half-written model where a good one was.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .nn.module import Module


def save(obj, path) -> Path:
    """Write a model's state dict (or any ``{name: array}`` mapping) to ``path`` (``.npz``).

    Returns the path written. The write is atomic: temporary file, then ``os.replace``.
    """
    state = obj.state_dict() if isinstance(obj, Module) else obj
    if not isinstance(state, dict):
        raise TypeError(f"save: expected a Module or a dict of arrays, got {type(obj).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.asarray(value) for key, value in state.items()}
    for key, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"save: {key!r} is not a numeric array (dtype object)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path, model: Module | None = None):
    """Read a ``.npz`` state dict (``allow_pickle=False``).

    Parameters
    ----------
    path : str or Path
    model : Module, optional
        When given, the state is loaded into it (strictly: missing, extra or mis-shaped keys
        raise and leave the model unchanged) and the model is returned.

    Returns
    -------
    OrderedDict of arrays, or ``model``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            state = OrderedDict((key, archive[key]) for key in archive.files)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:  # truncated/corrupt
        raise ValueError(f"load: {path} is not a readable .npz state dict ({error})") from error
    if model is None:
        return state
    model.load_state_dict(state)
    return model
