"""The CIFAR-10 binary reader, on small batch files written by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from data_helpers import isolated_env  # noqa: F401  (fixture)
from minicnn.data import DataError, load_dataset, read_cifar10, read_cifar10_batch
from minicnn.data.cifar import RECORD_BYTES, TRAIN_FILES, cifar10_files


def write_batch(path, images, labels):
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None],
                              images.reshape(len(labels), -1)], axis=1)
    path.write_bytes(records.tobytes())
    return path


def random_batch(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64))


def test_read_batch_layout(tmp_path):
    images, labels = random_batch(4, 0)
    path = write_batch(tmp_path / "data_batch_1.bin", images, labels)
    got_images, got_labels = read_cifar10_batch(path)
    assert got_images.shape == (4, 3, 32, 32) and got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # record layout: label byte, then 1024 red, 1024 green, 1024 blue bytes (row-major)
    raw = path.read_bytes()
    assert raw[0] == labels[0]
    assert raw[1 + 1024 + 32 * 2 + 5] == images[0, 1, 2, 5]


def test_read_several_batches_concatenates(tmp_path):
    a, b = random_batch(2, 1), random_batch(3, 2)
    p1 = write_batch(tmp_path / "a.bin", *a)
    p2 = write_batch(tmp_path / "b.bin", *b)
    images, labels = read_cifar10([p1, p2])
    assert images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(images, np.concatenate([a[0], b[0]]))
    np.testing.assert_array_equal(labels, np.concatenate([a[1], b[1]]))


def test_truncated_file_is_named(tmp_path):
    images, labels = random_batch(3, 0)
    path = write_batch(tmp_path / "test_batch.bin", images, labels)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"test_batch\.bin.*multiple of the 3073-byte"):
        read_cifar10_batch(path)


def test_wrong_record_count_and_bad_label(tmp_path):
    images, labels = random_batch(3, 0)
    path = write_batch(tmp_path / "x.bin", images, labels)
    with pytest.raises(DataError, match=r"x\.bin.*expected 10000 CIFAR-10 records"):
        read_cifar10_batch(path, expected_records=10000)
    labels[1] = 12
    write_batch(path, images, labels)
    with pytest.raises(DataError, match=r"x\.bin: record 1 has label 12"):
        read_cifar10_batch(path)
    with pytest.raises(DataError, match="no such"):
        read_cifar10_batch(tmp_path / "missing.bin")


def test_files_found_in_batches_subfolder(tmp_path):
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    for name in TRAIN_FILES:
        write_batch(sub / name, *random_batch(1, 0))
    assert cifar10_files(tmp_path, "train") == [sub / n for n in TRAIN_FILES]
    with pytest.raises(DataError, match="test_batch.bin"):
        cifar10_files(tmp_path, "test")


def test_load_dataset_checks_official_size(tmp_path, isolated_env):  # noqa: F811
    """Small files in a cifar10 folder are found, then rejected by name: not 10,000 records."""
    sub = tmp_path / "data" / "cifar10" / "cifar-10-batches-bin"
    sub.mkdir(parents=True)
    write_batch(sub / "test_batch.bin", *random_batch(2, 0))
    with pytest.raises(DataError, match=r"test_batch\.bin: expected 10000 CIFAR-10 records"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "data")


def test_load_dataset_reads_full_size_test_batch(tmp_path, isolated_env):  # noqa: F811
    images, labels = random_batch(10000, 3)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    write_batch(folder / "test_batch.bin", images, labels)
    assert (folder / "test_batch.bin").stat().st_size == 10000 * RECORD_BYTES
    ds = load_dataset("cifar10", "test", data_dir=tmp_path, limit=50)
    assert ds.images.shape == (50, 3, 32, 32) and ds.classes[0] == "airplane"
    assert len(ds.mean) == 3
    np.testing.assert_array_equal(ds.images, images[:50])
    np.testing.assert_array_equal(ds.labels, labels[:50])
