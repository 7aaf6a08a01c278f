"""DataLoader batching and shuffling, and the batch transforms."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.data import (Compose, DataError, DataLoader, Dataset, Normalize, RandomCrop,
                          RandomHorizontalFlip, default_transform)


def indexed_dataset(n=103, c=1, h=6, w=6):
    """Sample i has label i and every pixel equal to i % 256."""
    images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None],
                             (n, c, h, w)).copy()
    return Dataset(images, np.arange(n), [str(i) for i in range(n)], [0.5] * c, [0.25] * c)


@pytest.mark.parametrize("n, bs, drop_last, expected", [
    (103, 10, False, 11), (103, 10, True, 10), (100, 10, False, 10), (100, 10, True, 10),
    (5, 10, False, 1), (5, 10, True, 0)])
def test_number_of_batches(n, bs, drop_last, expected):
    loader = DataLoader(indexed_dataset(n), batch_size=bs, drop_last=drop_last)
    assert len(loader) == expected
    batches = list(loader)
    assert len(batches) == expected
    sizes = [len(y) for _, y in batches]
    if drop_last:
        assert all(s == bs for s in sizes)
    else:
        assert sum(sizes) == n


def test_batches_are_float32_in_unit_range_and_int64_labels():
    ds = indexed_dataset(20)
    x, y = next(iter(DataLoader(ds, batch_size=8)))
    assert x.dtype == np.float32 and x.shape == (8, 1, 6, 6)
    assert y.dtype == np.int64 and y.tolist() == list(range(8))
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange(8, dtype=np.float32) / 255)
    assert ds.images.dtype == np.uint8       # data set untouched


def test_every_sample_once_per_epoch_and_order_changes():
    loader = DataLoader(indexed_dataset(103), batch_size=10, shuffle=True, rng=0)
    orders = []
    for _ in range(3):
        labels = np.concatenate([y for _, y in loader])
        assert sorted(labels.tolist()) == list(range(103))
        orders.append(labels)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], np.arange(103))


def test_same_seed_same_batches():
    def run(rng):
        loader = DataLoader(indexed_dataset(50), batch_size=7, shuffle=True, rng=rng,
                            transform=Compose([RandomCrop(6, padding=2),
                                               RandomHorizontalFlip()]))
        return [(x.copy(), y.copy()) for _ in range(2) for x, y in loader]

    a, b = run(42), run(42)
    c = run(np.random.default_rng(42))
    d = run(43)
    for (xa, ya), (xb, yb), (xc, yc) in zip(a, b, c):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xc)
    assert any(not np.array_equal(ya, yd) for (_, ya), (_, yd) in zip(a, d))


def test_no_shuffle_is_sequential_and_global_state_untouched():
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    loader = DataLoader(indexed_dataset(30), batch_size=8, shuffle=True, rng=1,
                        transform=RandomHorizontalFlip())
    list(loader)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    ys = np.concatenate([y for _, y in DataLoader(indexed_dataset(30), batch_size=8)])
    assert ys.tolist() == list(range(30))


class SpyImages:
    """An images array that records how many samples each access reads."""

    def __init__(self, array):
        self.array, self.reads = array, []
        self.ndim, self.shape = array.ndim, array.shape

    def __len__(self):
        return len(self.array)

    def __getitem__(self, idx):
        out = self.array[idx]
        self.reads.append(len(out))
        return out


def test_reads_one_batch_at_a_time():
    ds = indexed_dataset(64)
    spy = SpyImages(ds.images)
    ds.images = spy
    loader = DataLoader(ds, batch_size=16, shuffle=True, rng=0)
    for _ in range(2):
        for _ in loader:
            pass
    assert spy.reads == [16] * 8


def test_argument_errors():
    ds = indexed_dataset(10)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DataError):
            DataLoader(ds, batch_size=bad)
    with pytest.raises(DataError):
        DataLoader(ds, rng="seed")
    with pytest.raises(DataError):
        DataLoader(object())
    with pytest.raises(DataError):
        DataLoader(ds, transform=3)


# ---------------------------------------------------------------- transforms

def test_normalize():
    x = np.random.default_rng(0).random((4, 3, 5, 5), dtype=np.float32)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    y = Normalize(mean, std)(x, None)
    expected = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std,
                                                                          np.float32)[:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert y.dtype == np.float32
    x64 = x.astype(np.float64)
    assert Normalize(mean, std)(x64).dtype == np.float64
    with pytest.raises(DataError):
        Normalize((0.1, 0.2), (1, 1))(x)
    with pytest.raises(DataError):
        Normalize(0.1, 0.0)


def test_random_crop_takes_windows_of_the_padded_image():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2, 6, 7), dtype=np.float32) + 1    # nonzero everywhere
    y = RandomCrop((6, 7), padding=2)(x, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for i in range(20):
        hits = [(t, l) for t in range(5) for l in range(5)
                if np.array_equal(padded[i, :, t:t + 6, l:l + 7], y[i])]
        assert hits, f"sample {i} is not a window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3
    assert RandomCrop(3)(x, rng).shape == (20, 2, 3, 3)
    np.testing.assert_array_equal(RandomCrop((6, 7), 0)(x, rng), x)
    with pytest.raises(DataError):
        RandomCrop(12, padding=1)(x, rng)


def test_random_horizontal_flip():
    x = np.random.default_rng(0).random((50, 1, 3, 4), dtype=np.float32)
    keep = x.copy()
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(x, np.random.default_rng()),
                                  x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(x, np.random.default_rng()), x)
    y = RandomHorizontalFlip(0.5)(x, np.random.default_rng(3))
    flipped = [np.array_equal(y[i], x[i, :, :, ::-1]) for i in range(50)]
    kept = [np.array_equal(y[i], x[i]) for i in range(50)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 40
    np.testing.assert_array_equal(x, keep)       # input never modified


def test_default_transform():
    gray = indexed_dataset(8)
    t = default_transform(gray)
    assert [type(s) for s in t.transforms] == [Normalize]
    t = default_transform(gray, augment=True)
    assert [type(s) for s in t.transforms] == [RandomCrop, Normalize]
    assert t.transforms[0].padding == 2
    colour = indexed_dataset(8, c=3, h=32, w=32)
    t = default_transform(colour, augment=True)
    assert [type(s) for s in t.transforms] == [RandomCrop, RandomHorizontalFlip, Normalize]
    assert t.transforms[0].padding == 4 and t.transforms[0].size == (32, 32)
    x, _ = next(iter(DataLoader(colour, batch_size=8, transform=default_transform(colour))))
    np.testing.assert_allclose(x[:, :, 0, 0], ((np.arange(8) / 255 - 0.5) / 0.25)[:, None]
                               .repeat(3, 1), rtol=1e-5)
