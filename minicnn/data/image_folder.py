"""Image files on disk: one image (:func:`load_image`) or a folder per class (:class:`ImageFolder`).

Pillow (installed with matplotlib) decodes PNG, JPEG, BMP and GIF; it is imported only when
an image is actually read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import Dataset
from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("reading image files needs Pillow: pip install pillow") from exc
    return Image


def _size_pair(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    h, w = (int(s) for s in image_size)
    if h < 1 or w < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    return h, w


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return channels


def load_image(path: str | os.PathLike, image_size=(28, 28), channels: int = 1) -> np.ndarray:
    """Read one image file as a uint8 CHW array.

    Parameters
    ----------
    path : str or path-like
        A PNG, JPEG, BMP or GIF file (the first frame of an animation).
    image_size : int or (H, W) or None
        Resize (bilinear) to this size; ``None`` keeps the file's size.
    channels : {1, 3}
        1: convert to grayscale (ITU-R 601 luma); 3: convert to RGB. Transparency is dropped.

    Returns
    -------
    ndarray, uint8, shape (channels, H, W)

    Raises
    ------
    DataError
        Naming the file, when it is missing or cannot be decoded.
    """
    path = Path(path)
    size = _size_pair(image_size)
    channels = _check_channels(channels)
    Image = _pil()
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                scale = 257.0 if img.mode.startswith("I;16") else 1.0
                img = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), "L")
            elif img.mode == "P":
                img = img.convert("RGBA")
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such image file") from exc
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def list_image_folder(root: str | os.PathLike,
                      extensions=IMAGE_EXTENSIONS) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes and ``(file, label)`` pairs of a folder-per-class tree.

    Classes are the sorted names of ``root``'s sub-folders (hidden ones skipped); files
    are those with an image extension (case-insensitive), sorted, searched recursively.

    Raises
    ------
    DataError
        When ``root`` is missing, has no class folders, or a class folder holds no image
        ("found no valid file for the classes ...", as torchvision says).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (expected a directory with one "
                        f"sub-folder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders found (expected one sub-folder of "
                        f"images per class, e.g. {root}/cat/1.png, {root}/dog/2.jpg)")
    exts = tuple(e.lower() for e in extensions)
    samples, empty = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).rglob("*")
                       if p.is_file() and p.suffix.lower() in exts
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        samples.extend((p, label) for p in files)
        if not files:
            empty.append(cls)
    if not samples:
        raise DataError(f"{root}: no image files ({', '.join(exts)}) in the class folders "
                        f"{', '.join(classes)}")
    if empty:
        # A class without images would be a label the model can never see: refuse it, as
        # torchvision's ImageFolder does, rather than train with a silently missing class.
        raise DataError(f"{root}: found no valid file for the classes {', '.join(empty)} "
                        f"(supported extensions: {', '.join(exts)}); add images or remove "
                        "the empty folders")
    return classes, samples


class ImageFolder(Dataset):
    """A data set read from a folder tree with one sub-folder of images per class.

    ``root/cat/001.png, root/dog/xyz.jpg, ...``: the sorted sub-folder names are the
    classes. Every image is decoded once, converted to ``channels`` and resized to
    ``image_size``, and kept in memory.

    Parameters
    ----------
    root : str or path-like
    image_size : int or (H, W)
        Size every image is resized to (default 28x28).
    channels : {1, 3}
        Grayscale or RGB.
    mean, std : sequence of float, optional
        Normalisation statistics (length ``channels``, [0, 1] units). By default they are
        measured on these images; pass the training folder's values for a test folder.
    extensions : tuple of str
        File suffixes read; others are ignored.

    Attributes
    ----------
    images : ndarray, uint8, shape (N, channels, H, W)
    labels : ndarray, int64, shape (N,)
    classes : list of str
    files : list of Path
        The file of each sample, in order.

    Raises
    ------
    DataError
        When ``root`` has no class folders, a class folder has no images, or naming an
        image that cannot be read.
    """

    def __init__(self, root: str | os.PathLike, image_size=(28, 28), channels: int = 1,
                 mean=None, std=None, extensions=IMAGE_EXTENSIONS):
        size = _size_pair(image_size)
        if size is None:
            raise DataError("ImageFolder needs an image_size: all images must share one size")
        channels = _check_channels(channels)
        classes, samples = list_image_folder(root, extensions)
        images = np.empty((len(samples), channels, *size), dtype=np.uint8)
        for i, (path, _) in enumerate(samples):
            images[i] = load_image(path, size, channels)
        labels = np.array([label for _, label in samples], dtype=np.int64)
        if mean is None or std is None:
            pixels = images.transpose(1, 0, 2, 3).reshape(channels, -1) / 255.0
            mean = pixels.mean(axis=1) if mean is None else mean
            std = np.maximum(pixels.std(axis=1), 1e-3) if std is None else std
        super().__init__(images, labels, classes, mean, std, name=Path(root).name,
                         split="", source=str(root))
        self.files = [p for p, _ in samples]
