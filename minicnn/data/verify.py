"""Checking data-set files: structure (cheap, on every load) and SHA-256 (on download and on
demand).

Structure means: an IDX file's header, dimensions and payload size, and that the shape is
the data set's (60000x28x28 for MNIST training images); a CIFAR batch's record size, count
and label range. Label files are small, so on load their content is also hashed when its
checksum is known -- which catches an MNIST folder that actually holds Fashion-MNIST (both
use the same file names).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from . import cifar
from .errors import ChecksumError, DataError, DatasetNotFoundError
from .idx import GZIP_MAGIC, read_idx
from .locate import locate_split
from .registry import DatasetSpec, get_spec

_CHUNK = 1 << 20
#: Files up to this many uncompressed bytes are hashed on every load.
CHEAP_HASH_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike, decompress: bool = False) -> str:
    """SHA-256 (hex) of a file, or of its gunzipped content when ``decompress`` and the file
    starts with the gzip magic bytes.

    Raises
    ------
    DataError
        Naming the file, when ``decompress`` and its gzip stream is corrupted or truncated.
    """
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as raw:
        compressed = decompress and raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            while chunk := stream.read(_CHUNK):
                h.update(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupted or truncated gzip data "
                            f"({type(exc).__name__}: {exc})") from exc
    return h.hexdigest()


def _role(spec: DatasetSpec, filename: str) -> tuple[str, int]:
    for split, names in spec.splits.items():
        if filename in names:
            return split, names.index(filename)
    raise DataError(f"{filename!r} is not a file of data set {spec.name!r}")


def _idx_bytes_sha256(array: np.ndarray) -> str:
    """SHA-256 of the uncompressed IDX file a uint8 array was read from."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    h = hashlib.sha256(header)
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def read_checked(spec: DatasetSpec, filename: str, path: str | os.PathLike):
    """Read one file of a data set and check it is what the data set says it is.

    Parameters
    ----------
    spec : DatasetSpec
    filename : str
        The file's canonical (uncompressed) name, e.g. ``"train-labels-idx1-ubyte"``.
    path : path-like
        Where it is (possibly ``.gz``).

    Returns
    -------
    ndarray
        IDX: images ``(N, H, W)`` uint8 or labels ``(N,)`` uint8.
    (images, labels)
        CIFAR-10: ``(N, 3, 32, 32)`` uint8 and ``(N,)`` int64.

    Raises
    ------
    DataError
        Naming the file: malformed, truncated, wrong shape or labels out of range.
    ChecksumError
        When a small file's content differs from its known checksum.
    """
    path = Path(path)
    split, role = _role(spec, filename)
    n = spec.num_samples.get(split)
    what = f"{spec.name} {split} {'images' if role == 0 else 'labels'}"
    if spec.format == "cifar10":
        per_file = n // len(spec.splits[split]) if n else None
        return cifar.read_cifar10_batch(path, expected_records=per_file)
    if spec.format != "idx":
        raise DataError(f"data set {spec.name!r} has no files to read")
    array = read_idx(path)
    _, h, w = spec.image_shape
    expected = (n, h, w) if role == 0 else (n,)
    if array.dtype != np.uint8 or (n is not None and array.shape != expected) \
            or (n is None and array.shape[1:] != expected[1:]):
        raise DataError(f"{path}: expected {what} of shape "
                        f"{expected if n is not None else ('N',) + expected[1:]} uint8, "
                        f"found {array.shape} {array.dtype}; the file is not {spec.title}")
    if role == 1 and array.size and array.max() >= len(spec.classes):
        raise DataError(f"{path}: {what}: labels must be 0..{len(spec.classes) - 1}, found "
                        f"values up to {array.max()}")
    remote = spec.remote_for(filename)
    if remote is not None and remote.content_sha256 and array.nbytes <= CHEAP_HASH_BYTES:
        got = _idx_bytes_sha256(array)
        if got != remote.content_sha256:
            raise ChecksumError(
                f"{path}: content does not match the published {spec.title} {filename} "
                f"(SHA-256 expected {remote.content_sha256}, got {got}); the file is "
                f"corrupted or belongs to another data set (MNIST, Fashion-MNIST and KMNIST "
                f"share file names)")
    return array


def verify_file(spec: DatasetSpec, filename: str, path: str | os.PathLike) -> dict:
    """Check structure and, where a checksum is known, hash one file.

    Returns
    -------
    dict
        ``file`` (str), ``path`` (str), ``sha256`` (hex of what was hashed, or None),
        ``checked`` (``"content sha256"``, ``"download sha256"`` or ``"structure only"``).

    Raises
    ------
    DataError, ChecksumError
        Naming the file.
    """
    path = Path(path)
    read_checked(spec, filename, path)
    remote = spec.remote_for(filename)
    result = {"file": filename, "path": str(path), "sha256": None, "checked": "structure only"}
    if remote is None:
        return result
    if remote.content_sha256:
        got = sha256_file(path, decompress=True)
        result.update(sha256=got, checked="content sha256")
        if got != remote.content_sha256:
            raise ChecksumError(f"{path}: SHA-256 of the uncompressed content is {got}, "
                                f"expected {remote.content_sha256} ({spec.title} {filename}); "
                                f"the file is corrupted or not the published one")
    elif remote.sha256 and not remote.members and path.name == remote.filename:
        got = sha256_file(path)
        result.update(sha256=got, checked="download sha256")
        if got != remote.sha256:
            raise ChecksumError(f"{path}: SHA-256 is {got}, expected {remote.sha256} "
                                f"(the {spec.title} file as published); the file is corrupted "
                                f"or was recompressed")
    return result


def verify_dataset(name: str, data_dir: str | os.PathLike | None = None,
                   splits=("train", "test")) -> list[dict]:
    """Locate a data set's files (no download) and verify each: structure and SHA-256.

    This hashes every file, so it takes a second or so for MNIST; loading does not.

    Returns
    -------
    list of dict
        One per file, as :func:`verify_file` returns them.

    Raises
    ------
    DatasetNotFoundError
        When a split's files are not found (the message lists where it looked).
    DataError, ChecksumError
        Naming the first bad file.
    """
    spec = get_spec(name)
    if not spec.needs_files:
        return []
    results = []
    for split in splits:
        loc = locate_split(spec, split, data_dir)
        if not loc.found:
            raise DatasetNotFoundError(
                f"cannot verify {spec.name} ({split}): files not found. Looked in:\n  "
                + "\n  ".join(loc.searched))
        for filename, path in zip(spec.splits[split], loc.paths):
            results.append(verify_file(spec, filename, path))
    return results
