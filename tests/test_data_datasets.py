"""load_dataset on real data (via MINICNN_DATA_DIR), the registry, describe and verify."""

from __future__ import annotations

import numpy as np
import pytest

import data_helpers
from data_helpers import isolated_env, real_data_dir  # noqa: F401
from minicnn.data import (ChecksumError, DataError, Dataset, UnknownDatasetError,
                          dataset_names, describe_datasets, get_spec, load_dataset,
                          verify_dataset)


def test_mnist_test_split_via_env(monkeypatch, isolated_env):  # noqa: F811
    folder = real_data_dir("mnist")
    monkeypatch.setenv("MINICNN_DATA_DIR", str(folder.parent))
    ds = load_dataset("mnist", "test")
    assert isinstance(ds, Dataset) and len(ds) == 10000
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(ds.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                               974, 1009]
    assert ds.classes == [str(i) for i in range(10)] and ds.name == "mnist"
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and label == 7
    assert "n=10000" in repr(ds)


def test_mnist_train_limit_and_stats(monkeypatch, isolated_env):  # noqa: F811
    folder = real_data_dir("mnist")
    ds = load_dataset("mnist", "train", data_dir=folder, limit=1000)
    assert len(ds) == 1000 and ds.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert ds.images.base is None or ds.images.base.size == ds.images.size  # no 47 MB view
    full = load_dataset("mnist", "train", data_dir=folder.parent)
    counts = np.bincount(full.images.ravel(), minlength=256)     # pixel histogram
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - full.mean[0]) < 1e-4 and abs(std - full.std[0]) < 1e-4


def test_fashion_mnist_via_env(monkeypatch, isolated_env):  # noqa: F811
    folder = real_data_dir("fashion-mnist")
    monkeypatch.setenv("MINICNN_DATA_DIR", str(folder.parent))
    ds = load_dataset("fashion-mnist", "test", limit=10)
    assert ds.images.shape == (10, 1, 28, 28) and ds.classes[9] == "Ankle boot"


def test_folder_of_the_other_data_set_is_caught(isolated_env):  # noqa: F811
    fashion = real_data_dir("fashion-mnist")
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte.*another data set"):
        load_dataset("mnist", "test", data_dir=fashion)   # flat layout, wrong files


def test_verify_real_mnist(isolated_env):  # noqa: F811
    folder = real_data_dir("mnist")
    report = verify_dataset("mnist", folder.parent)
    assert len(report) == 4 and all(r["checked"] == "content sha256" for r in report)
    assert report[0]["sha256"] == get_spec("mnist").remote[0].content_sha256


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownDatasetError) as info:
        load_dataset("imagenet")
    for name in ("mnist", "fashion-mnist", "kmnist", "cifar10", "synthetic"):
        assert name in str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, KeyError)
    assert get_spec("Fashion_MNIST").name == "fashion-mnist"
    assert get_spec("CIFAR-10").name == "cifar10"


def test_bad_split_and_limit():
    with pytest.raises(DataError, match="splits train, test"):
        load_dataset("synthetic", "validation")
    for bad in (0, -3, 2.5, "10"):
        with pytest.raises(DataError, match="limit"):
            load_dataset("synthetic", limit=bad)


def test_registry_entries_are_consistent():
    assert dataset_names()[:5] == ["mnist", "fashion-mnist", "kmnist", "cifar10", "synthetic"]
    for name in dataset_names():
        spec = get_spec(name)
        c = spec.image_shape[0]
        assert len(spec.mean) == len(spec.std) == c and len(spec.classes) == 10
        assert all(0 < m < 1 and 0 < s < 1 for m, s in zip(spec.mean, spec.std))
        if spec.needs_files:
            assert len(spec.mirrors) >= 1 and all(m.startswith("http") for m in spec.mirrors)
            for split, files in spec.splits.items():
                for f in files:
                    remote = spec.remote_for(f)
                    assert remote is not None, (name, f)
                    for h in (remote.sha256, remote.content_sha256):
                        assert h is None or (len(h) == 64 and int(h, 16) >= 0)
    assert len(get_spec("mnist").mirrors) >= 2
    assert get_spec("cifar10").image_shape == (3, 32, 32)


def test_describe_datasets(tmp_path, monkeypatch, isolated_env):  # noqa: F811
    info = {d["name"]: d for d in describe_datasets(data_dir=tmp_path)}
    assert set(info) >= {"mnist", "fashion-mnist", "kmnist", "cifar10", "synthetic"}
    assert info["synthetic"]["found"] == {"train": "generated", "test": "generated"}
    assert info["mnist"]["found"] == {"train": None, "test": None}
    assert info["mnist"]["search_path"][0] == str(tmp_path / "mnist")
    assert info["mnist"]["cache_dir"] == str(isolated_env["cache"] / "mnist")
    assert info["mnist"]["checksum"] == "content sha256"
    assert info["kmnist"]["checksum"] == "download sha256"
    if data_helpers._REAL_DATA_ENV:
        folder = real_data_dir("mnist")
        info = {d["name"]: d for d in describe_datasets(data_dir=folder.parent)}
        assert info["mnist"]["found"]["test"] == str(folder.parent / "mnist")
