"""Reading the binary version of CIFAR-10 (``cifar-10-binary.tar.gz``).

Each batch file (``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``) is a run
of 3073-byte records: one label byte (0..9), then a 32x32 image as 1024 red, 1024 green and
1024 blue bytes, each plane in row-major order. That is already CHW, so a record's pixels
reshape straight to ``(3, 32, 32)``. The official files hold 10,000 records each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError

IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
SUBDIR = "cifar-10-batches-bin"
NUM_CLASSES = 10


def read_cifar10_batch(path: str | os.PathLike,
                       expected_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file.

    Parameters
    ----------
    path : str or path-like
        A ``*.bin`` batch file.
    expected_records : int, optional
        When given, the file must hold exactly this many records (10,000 for the official
        files).

    Returns
    -------
    images : ndarray, uint8, shape (N, 3, 32, 32)
    labels : ndarray, int64, shape (N,)

    Raises
    ------
    DataError
        Naming the file, when its size is not a positive multiple of 3073 bytes, differs
        from ``expected_records`` records, or a label byte is not in 0..9.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CIFAR-10 batch file")
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise DataError(f"{path}: not a CIFAR-10 binary batch: its size ({size} bytes) is not "
                        f"a positive multiple of the {RECORD_BYTES}-byte record "
                        f"(1 label byte + 3072 pixel bytes); the file may be truncated")
    n = size // RECORD_BYTES
    if expected_records is not None and n != expected_records:
        raise DataError(f"{path}: expected {expected_records} CIFAR-10 records "
                        f"({expected_records * RECORD_BYTES} bytes), found {n} ({size} bytes); "
                        f"the file is truncated or not the official batch")
    records = np.fromfile(path, dtype=np.uint8).reshape(n, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{path}: record {bad} has label {labels[bad]}, expected 0..9; "
                        f"the file is corrupted or not CIFAR-10")
    images = np.ascontiguousarray(records[:, 1:]).reshape(n, *IMAGE_SHAPE)
    return images, labels


def read_cifar10(paths: Sequence[str | os.PathLike],
                 expected_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several batch files (e.g. the five training batches).

    Returns
    -------
    images : ndarray, uint8, shape (N_total, 3, 32, 32)
    labels : ndarray, int64, shape (N_total,)
    """
    if not paths:
        raise DataError("read_cifar10: no batch files given")
    parts = [read_cifar10_batch(p, expected_records) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def cifar10_files(directory: str | os.PathLike, split: str = "train") -> list[Path]:
    """The batch files of ``split`` in ``directory`` or its ``cifar-10-batches-bin/``.

    Raises
    ------
    DataError
        When some of the files are in neither place (the message lists the missing ones).
    """
    names = {"train": TRAIN_FILES, "test": TEST_FILES}.get(split)
    if names is None:
        raise DataError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    for d in (directory, directory / SUBDIR):
        paths = [d / n for n in names]
        if all(p.is_file() for p in paths):
            return paths
    missing = [n for n in names if not (directory / n).is_file()]
    raise DataError(f"{directory}: CIFAR-10 {split} files missing: {', '.join(missing)} "
                    f"(looked in {directory} and {directory / SUBDIR})")
