"""Data for minicnn: readers, the data-set registry, locating and downloading, batches.

Quick start::

    from minicnn.data import load_dataset, DataLoader, default_transform

    train = load_dataset("mnist", "train")            # or "fashion-mnist", "kmnist",
    test = load_dataset("mnist", "test")              # "cifar10", "synthetic"
    loader = DataLoader(train, batch_size=128, shuffle=True, rng=0,
                        transform=default_transform(train))
    for x, y in loader:                               # x float32 (B, C, H, W), y int64 (B,)
        ...

Data sets are found in ``data_dir``, ``$MINICNN_DATA_DIR``, the user cache
(``~/.cache/minicnn``) or ``/usr/share/datasets``, and otherwise downloaded into the cache
(not when ``MINICNN_OFFLINE=1``); see :mod:`minicnn.data.locate`.
"""

from .cifar import read_cifar10, read_cifar10_batch
from .dataset import Dataset
from .download import download_dataset, download_file
from .errors import (ChecksumError, DataError, DatasetNotFoundError, DownloadError,
                     UnknownDatasetError)
from .idx import read_idx, read_idx_header, write_idx
from .image_folder import ImageFolder, load_image
from .load import dataset_files, describe_datasets, load_dataset
from .loader import DataLoader
from .locate import cache_dir, search_roots
from .registry import DatasetSpec, RemoteFile, dataset_names, get_spec, register_dataset
from .synthetic import SYNTHETIC_CLASSES, make_synthetic
from .transforms import (Compose, Normalize, RandomCrop, RandomHorizontalFlip,
                         default_transform)
from .verify import sha256_file, verify_dataset

__all__ = [
    "ChecksumError", "Compose", "DataError", "DataLoader", "Dataset", "DatasetNotFoundError",
    "DatasetSpec", "DownloadError", "ImageFolder", "Normalize", "RandomCrop",
    "RandomHorizontalFlip", "RemoteFile", "SYNTHETIC_CLASSES", "UnknownDatasetError",
    "cache_dir", "dataset_files", "dataset_names", "default_transform", "describe_datasets",
    "download_dataset", "download_file", "get_spec", "load_dataset", "load_image",
    "make_synthetic", "read_cifar10", "read_cifar10_batch", "read_idx", "read_idx_header",
    "register_dataset", "search_roots", "sha256_file", "verify_dataset", "write_idx",
]
