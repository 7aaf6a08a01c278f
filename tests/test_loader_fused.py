"""The loader's fused batch path (crops / flips on uint8, then one convert-and-normalise) gives
the same batches, bit for bit, as converting first and applying the transform to floats."""

from types import SimpleNamespace

import numpy as np
import pytest

from minicnn.data import DataLoader
from minicnn.data.transforms import (Compose, Normalize, RandomCrop, RandomHorizontalFlip,
                                     default_transform)


def _dataset(n=200, c=1, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    mean = images.mean(axis=(0, 2, 3)) / 255
    std = images.std(axis=(0, 2, 3)) / 255
    return SimpleNamespace(images=images, labels=labels, mean=mean, std=std)


def _batches(dataset, transform, fused, start=0):
    loader = DataLoader(dataset, batch_size=32, shuffle=True, drop_last=False,
                        transform=transform, rng=7)
    if not fused:
        loader._fused = None                # force the generic float path
    else:
        assert loader._fused is not None
    return [[(x.copy(), y) for x, y in loader.batches(start=start)] for _ in range(2)]


@pytest.mark.parametrize("channels, augment", [(1, False), (1, True), (3, False), (3, True)])
def test_fused_batches_are_bit_identical_to_the_float_path(channels, augment):
    dataset = _dataset(c=channels)
    transform = default_transform(dataset, augment=augment)
    for start in (0, 3):
        fused, generic = (_batches(dataset, transform, f, start) for f in (True, False))
        for epoch_f, epoch_g in zip(fused, generic):
            assert len(epoch_f) == len(epoch_g) > 0
            for (xf, yf), (xg, yg) in zip(epoch_f, epoch_g):
                assert xf.dtype == xg.dtype == np.float32 and xf.shape == xg.shape
                assert np.array_equal(xf.view(np.uint32), xg.view(np.uint32))
                assert np.array_equal(yf, yg)


def test_only_pixel_moving_steps_before_one_normalize_are_fused():
    dataset = _dataset()
    norm = Normalize(0.5, 0.25)
    fusable = [norm, Compose([norm]), Compose([RandomCrop(12, 1), RandomHorizontalFlip(), norm])]
    for transform in fusable:
        assert DataLoader(dataset, transform=transform)._fused is not None
    scale = lambda x, rng: x * 2                                       # noqa: E731
    for transform in (None, scale, Compose([norm, RandomCrop(12, 1)]), Compose([scale, norm])):
        assert DataLoader(dataset, transform=transform)._fused is None


def test_random_crop_gives_the_same_windows_on_uint8_and_float():
    dataset = _dataset(n=16, c=3, h=9, w=11)
    crop = RandomCrop((7, 8), padding=2)
    as_uint8 = crop(dataset.images, np.random.default_rng(1))
    as_float = crop(dataset.images.astype(np.float32), np.random.default_rng(1))
    assert as_uint8.dtype == np.uint8 and as_uint8.shape == (16, 3, 7, 8)
    assert as_uint8.flags.c_contiguous
    assert np.array_equal(as_uint8.astype(np.float32), as_float)
