"""The built-in synthetic shapes data set."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.data import SYNTHETIC_CLASSES, DataError, get_spec, load_dataset, make_synthetic


def test_shapes_dtypes_and_balance():
    images, labels = make_synthetic(1000, seed=3)
    assert images.shape == (1000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (1000,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [100] * 10
    assert len(SYNTHETIC_CLASSES) == 10 == len(set(SYNTHETIC_CLASSES))


def test_deterministic_per_seed():
    a = make_synthetic(300, seed=7)
    b = make_synthetic(300, seed=7)
    c = make_synthetic(300, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_global_numpy_state_untouched():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    make_synthetic(50, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_images_show_a_shape_on_a_dark_background():
    images, labels = make_synthetic(500, seed=1)
    x = images[:, 0].astype(np.float32) / 255
    bright = (x > 0.5).reshape(len(x), -1).sum(1)
    assert bright.min() >= 8                      # every image has a visible shape
    assert np.median(x) < 0.15                   # mostly background
    # classes differ on average: mean images are far apart
    means = np.stack([x[labels == k].mean(0) for k in range(10)])
    d = np.abs(means[:, None] - means[None]).mean(axis=(2, 3))
    assert d[~np.eye(10, dtype=bool)].min() > 0.01


def test_load_dataset_splits_and_stats():
    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    assert len(train) == 6000 and len(test) == 1000
    assert train.classes == list(SYNTHETIC_CLASSES) and train.name == "synthetic"
    assert not np.array_equal(train.images[:1000], test.images)
    again = load_dataset("synthetic", "test")
    np.testing.assert_array_equal(test.images, again.images)
    other = load_dataset("synthetic", "test", seed=1)
    assert not np.array_equal(test.images, other.images)
    small = load_dataset("synthetic", "train", limit=50)
    assert len(small) == 50
    # the registered statistics are those of the default training split
    x = train.images / 255.0
    assert abs(x.mean() - train.mean[0]) < 1e-3 and abs(x.std() - train.std[0]) < 1e-3
    assert get_spec("synthetic").mean == train.mean


def test_bad_arguments():
    with pytest.raises(DataError):
        make_synthetic(-1)
    with pytest.raises(DataError):
        make_synthetic(5, image_size=8)
    assert make_synthetic(0)[0].shape == (0, 1, 28, 28)
