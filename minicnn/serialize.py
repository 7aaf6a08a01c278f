"""Saving and loading state dicts as ``.npz`` -- plain arrays, never pickles -- and writing
any file atomically.

Every file minicnn writes (models, checkpoints, JSON, figures) goes through
:func:`atomic_write`: a temporary file beside the target, flushed to disk, then renamed into
place, so a crash or a kill mid-write never leaves a half-written file where a good one was.
A kill can leave the temporary file itself behind; :func:`remove_stale_temporaries` clears
those up on the next run.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .nn.module import Module

# Temporary files are named ``.<target name>.<random>.tmp`` -- hidden, and recognisable later.
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0o666 less the umask.

    ``mkstemp`` creates its files 0o600; without this a replaced file would silently lose
    its group/other read permission.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> Path:
    """Write a file through ``write(handle)`` so that ``path`` is either old or complete.

    Parameters
    ----------
    path : str or Path
        The target; its folder is created when missing.
    write : callable(handle)
        Writes the contents to the binary file handle it is given.

    Returns
    -------
    Path
        ``path``. The file gets the usual permissions (0o666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", suffix=_TMP_SUFFIX,
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def write_json(path, value) -> Path:
    """Write ``value`` as indented JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left in ``folder``.

    Call it only when no other process is writing into ``folder``. Returns the files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(_TMP_PREFIX)
             and p.name.endswith(_TMP_SUFFIX)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save(obj, path) -> Path:
    """Write a model's state dict (or any ``{name: array}`` mapping) to ``path`` (``.npz``).

    Returns the path written. The write is atomic (see :func:`atomic_write`).
    """
    state = obj.state_dict() if isinstance(obj, Module) else obj
    if not isinstance(state, dict):
        raise TypeError(f"save: expected a Module or a dict of arrays, got {type(obj).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {key: np.asarray(value) for key, value in state.items()}
    for key, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"save: {key!r} is not a numeric array (dtype object)")
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


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
