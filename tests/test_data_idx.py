"""IDX reading and writing: round trips, real MNIST files, and every kind of broken file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from data_helpers import real_data_dir
from minicnn.data import DataError, read_idx, read_idx_header, write_idx


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_every_dtype(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    path = write_idx(tmp_path / "a.idx", a, compress=compress)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable
    dt, shape = read_idx_header(path)
    assert shape == (3, 5, 7) and dt.itemsize == a.dtype.itemsize


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)),
       st.booleans())
def test_round_trip_property(tmp_path_factory, array, compress):
    path = tmp_path_factory.mktemp("idx") / "x"
    write_idx(path, array, compress=compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_gzip_detected_by_magic_not_extension(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "compressed.bin", a, compress=True)      # gzip without .gz
    write_idx(tmp_path / "raw.gz", a, compress=False)             # raw named .gz
    assert (tmp_path / "compressed.bin").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed.bin"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), a)


def test_raw_file_layout_is_big_endian(tmp_path):
    write_idx(tmp_path / "x", np.array([1, 258], dtype=np.int32))
    assert (tmp_path / "x").read_bytes() == bytes(
        [0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])


def _good_bytes():
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    return bytes([0, 0, 8, 3]) + np.array([3, 4, 5], ">u4").tobytes() + a.tobytes()


@pytest.mark.parametrize("case, needle", [
    ("truncated_payload", "truncated"),
    ("truncated_header", "truncated"),
    ("extra_bytes", "does not match the header"),
    ("wrong_magic", "not an IDX file"),
    ("unknown_dtype", "unknown IDX data-type code"),
    ("zero_dims", "0 dimensions"),
    ("empty", "not an IDX file"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_broken_files_raise_dataerror_naming_the_file(tmp_path, case, needle, compress):
    data = _good_bytes()
    data = {
        "truncated_payload": data[:-7],
        "truncated_header": data[:9],
        "extra_bytes": data + b"\x00\x01",
        "wrong_magic": b"\x08\x03" + data[2:],
        "unknown_dtype": data[:2] + b"\x42" + data[3:],
        "zero_dims": data[:3] + b"\x00" + data[4:],
        "empty": b"",
    }[case]
    path = tmp_path / f"broken-{case}"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    good = gzip.compress(_good_bytes() * 50)
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path)


def test_corrupted_gzip_stream(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, (50, 28, 28), dtype=np.uint8)   # compressible: real deflate blocks
    write_idx(tmp_path / "c.gz", a, compress=True)
    data = bytearray((tmp_path / "c.gz").read_bytes())
    for i in range(30, len(data) - 10, 97):
        data[i] ^= 0x5A
    (tmp_path / "c.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"c\.gz.*corrupted"):
        read_idx(tmp_path / "c.gz")


def test_corrupted_gzip_crc_is_checked(tmp_path):
    """A flipped byte inside a stored (uncompressed) deflate block only shows in the CRC."""
    a = np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8)  # incompressible
    raw = bytes([0, 0, 8, 1]) + np.array([4000], ">u4").tobytes() + a.tobytes()
    data = bytearray(gzip.compress(raw, compresslevel=0))
    data[len(data) // 2] ^= 0x01
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="crc.gz"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such IDX file"):
        read_idx(tmp_path / "nope")


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(DataError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "x", np.zeros((), dtype=np.uint8))


def test_real_mnist_files():
    folder = real_data_dir("mnist")
    train_labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    assert train_labels.shape == (60000,) and train_labels.dtype == np.uint8
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert train_labels.min() == 0 and train_labels.max() == 9
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    test_images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert test_images.shape == (10000, 28, 28)
    assert test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert read_idx_header(folder / "t10k-images-idx3-ubyte.gz")[1] == (10000, 28, 28)


def test_real_fashion_mnist_files():
    folder = real_data_dir("fashion-mnist")
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    assert labels[:5].tolist() == [9, 0, 0, 3, 0]
    assert images.shape == (10000, 28, 28)


def _idx_header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dims, code", [
    ((1000, 28, 28), 0x08),            # more items than the file holds
    ((2**31, 2**31), 0x08),            # absurd: 4 EiB
    ((2**32 - 1,) * 4, 0x0E),          # absurder, float64: the product overflows int64
], ids=["more_items", "huge", "overflowing"])
def test_header_larger_than_the_file_is_a_data_error_not_an_allocation(
        tmp_path, monkeypatch, dims, code, compress):
    """The size the header declares is checked against the bytes present before anything of
    that size is allocated: a DataError naming the file and both byte counts."""
    payload = bytes(range(256)) * 4                      # 1024 bytes of data
    content = _idx_header(code, dims) + payload
    path = tmp_path / "lying.idx"
    path.write_bytes(gzip.compress(content, mtime=0) if compress else content)

    def no_huge_arrays(shape, *args, **kwargs):
        raise AssertionError(f"np.empty{shape} called: allocation before the size check")

    monkeypatch.setattr(np, "empty", no_huge_arrays)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    expected = int(np.prod(dims, dtype=object)) * (8 if code == 0x0E else 1)
    assert "lying.idx" in message
    assert str(expected) in message and "1024" in message


def test_a_gzip_file_with_a_lying_header_reads_only_what_exists(tmp_path, monkeypatch):
    """gzip gives no size up front: the reader must read in bounded chunks, never ask the
    stream for the declared size in one call."""
    content = _idx_header(0x08, (2**31, 2**31)) + b"\x01" * 10
    path = tmp_path / "lying.gz"
    path.write_bytes(gzip.compress(content, mtime=0))
    asked = []
    real_read = gzip.GzipFile.read

    def recording_read(self, size=-1):
        asked.append(size)
        return real_read(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", recording_read)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    assert max(asked) <= 1 << 20
