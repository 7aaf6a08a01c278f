"""The public entry points: :func:`load_dataset` and :func:`describe_datasets`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import Dataset
from .download import download_dataset
from .errors import DataError, DatasetNotFoundError
from .locate import ENV_DATA_DIR, ENV_OFFLINE, cache_dir, candidate_dirs, locate_split, offline
from .registry import SPLITS, DatasetSpec, get_spec, REGISTRY
from .synthetic import make_synthetic
from .verify import read_checked


def _check_split(spec: DatasetSpec, split: str) -> str:
    valid = tuple(spec.splits) if spec.splits else SPLITS
    if split not in valid:
        raise DataError(f"data set {spec.name!r} has splits {', '.join(valid)}; got {split!r}")
    return split


def _not_found(spec: DatasetSpec, split: str, searched: list[str], why_no_download: str,
               ) -> DatasetNotFoundError:
    files = ", ".join(f"{n}[.gz]" for n in spec.splits[split])
    return DatasetNotFoundError(
        f"data set {spec.name!r} ({split} split) not found.\n"
        f"Looked for {files} in:\n  " + "\n  ".join(searched) + "\n"
        f"{why_no_download}\n"
        f"To fix: pass --data-dir DIR (data_dir=DIR in Python) or set {ENV_DATA_DIR}=DIR, "
        f"where DIR holds the files directly or in a '{spec.dirnames[0]}' sub-folder; or "
        f"allow downloading (download=True and {ENV_OFFLINE} unset) to fetch them into "
        f"{cache_dir() / spec.dirnames[0]}.")


def dataset_files(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                  download: bool = True, progress: bool | None = None) -> list[Path]:
    """Paths of one split's files: found locally (see :mod:`minicnn.data.locate`) or else
    downloaded into the cache.

    Returns
    -------
    list of Path
        In the order of ``spec.splits[split]`` (IDX: images, labels).

    Raises
    ------
    DatasetNotFoundError
        Listing every folder searched, and why nothing was downloaded.
    """
    spec = get_spec(name)
    _check_split(spec, split)
    if spec.format == "scenes":
        return dataset_files(spec.base, split, data_dir, download, progress)
    if not spec.needs_files:
        return []
    loc = locate_split(spec, split, data_dir)
    if loc.found:
        return loc.paths
    if not download:
        raise _not_found(spec, split, loc.searched, "Downloading is off (download=False).")
    if offline():
        raise _not_found(spec, split, loc.searched,
                         f"Downloading is off ({ENV_OFFLINE}={os.environ[ENV_OFFLINE]}).")
    dest = cache_dir() / spec.dirnames[0]
    try:
        download_dataset(spec, split, dest, progress=progress)
    except (DataError, OSError) as exc:
        raise _not_found(spec, split, loc.searched, f"Download failed: {exc}") from exc
    loc = locate_split(spec, split, dest)
    if not loc.found:  # pragma: no cover - download_dataset guarantees the files
        raise _not_found(spec, split, loc.searched, "Download finished but files are missing.")
    return loc.paths


def _check_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    return int(limit)


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, limit: int | None = None, seed: int = 0,
                 progress: bool | None = None) -> Dataset:
    """Load a registered data set into memory.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``, ``"cifar10"``, ``"synthetic"``, or the
        detection scenes ``"mnist-scenes"`` and ``"fashion-mnist-scenes"`` (see
        :func:`describe_datasets`).
    split : {"train", "test"}
    data_dir : path-like, optional
        Searched first; then ``$MINICNN_DATA_DIR``, the user cache and
        ``/usr/share/datasets`` (see :mod:`minicnn.data.locate`).
    download : bool
        Download into the cache when not found (never when ``MINICNN_OFFLINE=1``).
    limit : int, optional
        Keep only the first ``limit`` samples (the files' order; for ``synthetic`` only
        ``limit`` images are generated).
    seed : int
        Only for generated sets (``synthetic``, the scenes): the train and test splits are
        generated from different streams of this seed, so they never coincide. Scenes use
        ``limit`` as their number (default ``spec.default_sizes``) and take their objects
        from the same split of their base data set only.
    progress : bool or None
        Download progress bar; ``None``: only on a terminal.

    Returns
    -------
    Dataset, or SceneDataset for scenes
        ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)`` (scenes: ``(N, 4, 5)``
        rows ``(class, x0, y0, x1, y1)``, see :mod:`minicnn.data.scenes`), ``classes``,
        ``mean`` and ``std`` of the training split.

    Raises
    ------
    UnknownDatasetError
        Listing the valid names.
    DatasetNotFoundError
        Listing where it looked.
    DataError
        Naming a file that is truncated, corrupted or of the wrong shape.
    """
    spec = get_spec(name)
    _check_split(spec, split)
    limit = _check_limit(limit)
    if spec.format == "scenes":
        return _load_scenes(spec, split, data_dir, download, limit, seed, progress)
    if spec.format == "synthetic":
        n = limit if limit is not None else spec.default_sizes[split]
        stream = np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split),))
        images, labels = make_synthetic(n, seed=stream, image_size=spec.image_shape[1])
        return Dataset(images, labels, spec.classes, spec.mean, spec.std, name=spec.name,
                       split=split, source=f"generated (seed={seed})")
    paths = dataset_files(spec.name, split, data_dir, download, progress)
    names = spec.splits[split]
    if spec.format == "idx":
        images = read_checked(spec, names[0], paths[0])
        labels = read_checked(spec, names[1], paths[1])
        images = images[:, None]                            # (N, H, W) -> (N, 1, H, W)
    elif spec.format == "cifar10":
        parts = [read_checked(spec, n, p) for n, p in zip(names, paths)]
        images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    else:  # pragma: no cover - registry only holds known formats
        raise DataError(f"data set {spec.name!r}: unknown format {spec.format!r}")
    if limit is not None and limit < len(labels):
        images, labels = images[:limit].copy(), labels[:limit].copy()
    return Dataset(images, labels, spec.classes, spec.mean, spec.std, name=spec.name,
                   split=split, source=str(paths[0].parent))


def _load_scenes(spec: DatasetSpec, split: str, data_dir, download: bool, limit, seed: int,
                 progress):
    """Scenes made from ``spec.base``'s ``split`` only (train scenes never see a test image);
    the split and the seed pick the random stream, so the same call gives the same scenes."""
    from .scenes import SceneDataset, make_scenes

    base = load_dataset(spec.base, split, data_dir=data_dir, download=download,
                        progress=progress)
    count = limit if limit is not None else spec.default_sizes[split]
    stream = np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), 0x5CE4E))
    images, targets = make_scenes(base.images, base.labels, count, np.random.default_rng(stream),
                                  canvas=spec.image_shape[1])
    return SceneDataset(images, targets, spec.classes, spec.mean, spec.std, name=spec.name,
                        split=split, source=f"generated from {base.source} (seed={seed})")


def describe_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """What minicnn knows about each registered data set and where its files are.

    Never downloads and reads no file contents (only checks that files exist), so it is
    instant -- the body of a ``minicnn datasets`` command.

    Returns
    -------
    list of dict, one per data set, with keys
        ``name``, ``title``, ``format``, ``image_shape`` (C, H, W), ``num_classes``,
        ``classes``, ``num_samples`` ({split: n}), ``mean``, ``std``,
        ``found`` ({split: folder path (str), ``"generated"`` or None}),
        ``search_path`` (list of folders looked in, in order; also under the key
        ``searched``), ``cache_dir`` (where a
        download would go, or None), ``mirrors`` (list of base URLs), ``checksum``
        (``"content sha256"``, ``"download sha256"``, ``"structure only"`` or
        ``"generated"``), ``homepage``, ``license``.
    """
    return [_describe(spec, data_dir) for spec in REGISTRY.values()]


def _describe(spec: DatasetSpec, data_dir) -> dict:
    """One entry of :func:`describe_datasets`."""
    info = {
        "name": spec.name, "title": spec.title, "format": spec.format,
        "image_shape": spec.image_shape, "num_classes": len(spec.classes),
        "classes": list(spec.classes), "num_samples": dict(spec.num_samples),
        "mean": spec.mean, "std": spec.std, "homepage": spec.homepage,
        "license": spec.license, "mirrors": list(spec.mirrors),
    }
    if spec.format == "scenes":
        # Generated from another data set's files: where those are is where these come from.
        base = _describe(get_spec(spec.base), data_dir)
        info.update({key: base[key] for key in ("found", "search_path", "searched",
                                                "cache_dir", "mirrors", "checksum")})
    elif not spec.needs_files:
        info.update(found={s: "generated" for s in spec.default_sizes}, search_path=[],
                    searched=[], cache_dir=None, checksum="generated")
    else:
        found = {}
        for split in spec.splits:
            loc = locate_split(spec, split, data_dir)
            found[split] = str(loc.directory) if loc.found else None
        if any(r.content_sha256 for r in spec.remote):
            checksum = "content sha256"
        elif any(r.sha256 for r in spec.remote):
            checksum = "download sha256"
        else:
            checksum = "structure only"
        places = [str(d) for d, _ in candidate_dirs(spec, data_dir)]
        info.update(found=found, search_path=places, searched=places,
                    cache_dir=str(cache_dir() / spec.dirnames[0]), checksum=checksum)
    return info
