"""Reading and writing IDX files, the format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the array itself in C order and big-endian byte order. The
data sets ship these files gzip-compressed; :func:`read_idx` recognises gzip by its magic
bytes (``1f 8b``), whatever the file is called.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

#: IDX type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=").str if dt.itemsize > 1 else dt.str: code
          for code, dt in IDX_DTYPES.items()}

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _open(path: Path):
    """Open ``path`` for binary reading, through gzip when its first bytes say so."""
    f = open(path, "rb")
    compressed = f.read(2) == GZIP_MAGIC
    f.seek(0)
    if compressed:
        return gzip.GzipFile(fileobj=f, mode="rb"), f, True
    return f, f, False


def _read_exact(stream, path: Path, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise DataError(f"{path}: file is truncated: expected {n} bytes of {what}, "
                        f"found only {len(data)}")
    return data


def _read_at_most(stream, limit: int) -> bytearray:
    """Up to ``limit`` bytes of ``stream``; memory grows with what is actually read."""
    data = bytearray()
    while len(data) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _parse_header(stream, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: not an IDX file: expected a 4-byte magic number "
                        f"00 00 <type> <ndim>, found only {len(magic)} bytes")
    if magic[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file: expected magic bytes 00 00 <type> <ndim>, "
                        f"found {magic.hex(' ')}")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX data-type code 0x{code:02X} "
                        f"(expected one of {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions (expected at least 1)")
    dims = np.frombuffer(_read_exact(stream, path, 4 * ndim, f"header ({ndim} dimensions)"),
                         dtype=">u4")
    return IDX_DTYPES[code], tuple(int(d) for d in dims)


def _wrap_stream_errors(path: Path, compressed: bool, exc: Exception) -> DataError:
    kind = "gzip data" if compressed else "file"
    return DataError(f"{path}: corrupted or truncated {kind} ({type(exc).__name__}: {exc})")


def read_idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """Read only the header of an IDX file (gzip or raw).

    Returns
    -------
    dtype : numpy.dtype
        The element type, in the file's big-endian byte order.
    shape : tuple of int
        The dimension sizes the header declares; nothing is said about the payload.
    """
    path = Path(path)
    stream, raw, compressed = _open(path)
    try:
        return _parse_header(stream, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise _wrap_stream_errors(path, compressed, exc) from exc
    finally:
        stream.close()
        raw.close()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is detected from its first two bytes, not its name.

    Returns
    -------
    ndarray
        Shape as declared in the header, e.g. ``(60000, 28, 28)`` uint8 for MNIST training
        images or ``(60000,)`` uint8 for its labels; native byte order, writeable.

    Raises
    ------
    DataError
        Naming the file, when the magic number, type code or dimension count is invalid,
        when the payload is shorter or longer than the header declares, or when the gzip
        stream is corrupted or cut short.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such IDX file")
    stream, raw, compressed = _open(path)
    try:
        dtype, shape = _parse_header(stream, path)
        header_bytes = 4 + 4 * len(shape)
        # Python ints: the product of absurd header dimensions must not overflow.
        expected = math.prod(shape) * dtype.itemsize
        if compressed:
            # The decompressed size is unknown until read: read at most what the header
            # declares, in chunks, so a lying header never causes a huge allocation.
            data = _read_at_most(stream, expected)
        else:
            actual = os.fstat(raw.fileno()).st_size - header_bytes
            if actual != expected:
                raise DataError(
                    f"{path}: payload size does not match the header: shape {shape} of "
                    f"{dtype.name} needs {expected} bytes after the {header_bytes}-byte "
                    f"header, the file has {actual}"
                    + (" (truncated)" if actual < expected else " (extra trailing bytes)"))
            data = _read_at_most(stream, expected)  # size checked: allocation is safe
        if len(data) != expected:
            raise DataError(f"{path}: file is truncated: shape {shape} of {dtype.name} needs "
                            f"{expected} bytes of data, found only {len(data)}")
        if stream.read(1):  # also makes gzip check its CRC and length trailer
            raise DataError(f"{path}: payload size does not match the header: more than the "
                            f"{expected} bytes that shape {shape} of {dtype.name} needs")
    except (OSError, EOFError, zlib.error) as exc:
        raise _wrap_stream_errors(path, compressed, exc) from exc
    finally:
        stream.close()
        raw.close()
    out = np.frombuffer(data, dtype=dtype).reshape(shape)
    if dtype.itemsize > 1:
        out = out.astype(dtype.newbyteorder("="))
    return out


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = False) -> Path:
    """Write an array as an IDX file.

    Parameters
    ----------
    path : str or path-like
        Destination; its name is used as given (add ``.gz`` yourself when compressing).
    array : ndarray
        Any shape with 1 to 255 dimensions; dtype uint8, int8, int16, int32, float32 or
        float64.
    compress : bool
        Write gzip-compressed (deterministic: no timestamp in the gzip header).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str if array.dtype.itemsize > 1 else array.dtype.str
    if key not in _CODES:
        raise DataError(f"{path}: cannot write dtype {array.dtype} as IDX "
                        f"(supported: uint8, int8, int16, int32, float32, float64)")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"{path}: IDX needs 1 to 255 dimensions, array has {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise DataError(f"{path}: dimension sizes must be below 2**32, got {array.shape}")
    code = _CODES[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress:
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                    filename="") as f:
            f.write(header)
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(header)
            f.write(payload)
    return path
